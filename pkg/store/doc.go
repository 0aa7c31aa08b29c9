// Package store keeps the controller's records: one Volume per CSI volume
// and one Node per storage node. Store is the interface the controller
// uses; each backend implements it with the same guarantees, and package
// storetest checks them against any backend.
//
// Every write is a compare-and-swap on the record's Revision, so two
// controllers (or two goroutines of one) that read the same record cannot
// both write it: the second one gets ErrConflict, reads again and decides
// again. Mutate and BumpEpoch wrap that loop.
//
// Epochs (Layout.Epoch) belong to the data plane's safety rules, which
// live above the store. The store only refuses an update that would lower
// a volume's epoch or attachment generation, so that no sequence of
// writes, however buggy, can hand out an epoch twice.
package store
