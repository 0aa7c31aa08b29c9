package controller

// Capacity returns the free bytes of the live nodes whose topology matches
// segment (every key of segment with the same value; an empty segment
// matches every node).
func (c *Controller) Capacity(segment map[string]string) int64 {
	var total int64
	for _, n := range c.liveNodes() {
		if matches(n.Topology, segment) {
			total += n.FreeBytes
		}
	}
	return total
}
