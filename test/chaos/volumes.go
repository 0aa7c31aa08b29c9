package chaos

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trireme-csi/trireme/pkg/api"
	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/csi"
)

// volume is a volume the harness created and published.
type volume struct {
	name        string
	id          string
	size        int64
	generation  uint64 // attachment generation of the publish
	publishedTo string
}

func blockCapability() *csipb.VolumeCapability {
	return &csipb.VolumeCapability{
		AccessType: &csipb.VolumeCapability_Block{Block: &csipb.VolumeCapability_BlockVolume{}},
		AccessMode: &csipb.VolumeCapability_AccessMode{Mode: csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
}

func zoneTopology(zone string) *csipb.Topology {
	return &csipb.Topology{Segments: map[string]string{api.ZoneTopologyKey: zone}}
}

// createVolume creates a 3-replica volume with minInSyncReplicas 2, its
// primary preferably in zone, and publishes it to the node publishTo, as
// the external-provisioner and external-attacher would.
func (c *cluster) createVolume(ctx context.Context, name string, size int64, zone, publishTo string) (*volume, error) {
	var preferred []*csipb.Topology
	preferred = append(preferred, zoneTopology(zone))
	for _, z := range c.spec.zones {
		if z != zone {
			preferred = append(preferred, zoneTopology(z))
		}
	}
	req := &csipb.CreateVolumeRequest{
		Name:               name,
		CapacityRange:      &csipb.CapacityRange{RequiredBytes: size},
		VolumeCapabilities: []*csipb.VolumeCapability{blockCapability()},
		Parameters:         map[string]string{csi.ParamReplicas: "3", csi.ParamMinInSyncReplicas: "2"},
		AccessibilityRequirements: &csipb.TopologyRequirement{
			Requisite: preferred, Preferred: preferred,
		},
	}
	var resp *csipb.CreateVolumeResponse
	err := retry(ctx, func() (err error) {
		resp, err = c.controller.csi().CreateVolume(ctx, req)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create volume %s: %w", name, err)
	}
	v := &volume{name: name, id: resp.GetVolume().GetVolumeId(), size: resp.GetVolume().GetCapacityBytes(), publishedTo: publishTo}
	var pub *csipb.ControllerPublishVolumeResponse
	err = retry(ctx, func() (err error) {
		pub, err = c.controller.csi().ControllerPublishVolume(ctx, &csipb.ControllerPublishVolumeRequest{
			VolumeId: v.id, NodeId: publishTo, VolumeCapability: blockCapability(),
		})
		return err
	})
	if err != nil {
		return v, fmt.Errorf("publish volume %s to %s: %w", v.id, publishTo, err)
	}
	if v.generation, err = strconv.ParseUint(pub.GetPublishContext()[csi.PublishGeneration], 10, 64); err != nil {
		return v, fmt.Errorf("publish volume %s: generation: %w", v.id, err)
	}
	return v, nil
}

// deleteVolume unpublishes and deletes the volume.
func (c *cluster) deleteVolume(ctx context.Context, v *volume) error {
	err := retry(ctx, func() error {
		_, err := c.controller.csi().ControllerUnpublishVolume(ctx, &csipb.ControllerUnpublishVolumeRequest{VolumeId: v.id, NodeId: v.publishedTo})
		return err
	})
	if err != nil {
		return fmt.Errorf("unpublish volume %s: %w", v.id, err)
	}
	err = retry(ctx, func() error {
		_, err := c.controller.csi().DeleteVolume(ctx, &csipb.DeleteVolumeRequest{VolumeId: v.id})
		return err
	})
	if err != nil {
		return fmt.Errorf("delete volume %s: %w", v.id, err)
	}
	return nil
}

// retryFor bounds the retries of a CSI call that failed with a code the
// CSI sidecars retry on.
const retryFor = 30 * time.Second

// retry calls f until it succeeds, fails with a code the sidecars would
// not retry, or retryFor passes. Every retry is counted in retries.
func retry(ctx context.Context, f func() error) error {
	deadline := time.Now().Add(retryFor)
	for {
		err := f()
		switch status.Code(err) {
		case codes.Unavailable, codes.Aborted, codes.DeadlineExceeded:
		default:
			return err
		}
		if time.Now().After(deadline) {
			return err
		}
		retries.Add(1)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// retries counts CSI calls the harness had to repeat.
var retries atomic.Int64

// locate asks the controller where the volume is served.
func (c *cluster) locate(ctx context.Context, id string) (*apiv1.LocateVolumeResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return c.controller.registry.LocateVolume(ctx, &apiv1.LocateVolumeRequest{VolumeId: id})
}

// endpoint resolves the volume's primary NBD address through the
// controller on every call, as a node's frontend does.
func (c *cluster) endpoint(id string) func(ctx context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		resp, err := c.locate(ctx, id)
		if err != nil {
			return "", err
		}
		if resp.GetPrimaryNbdAddress() == "" {
			return "", fmt.Errorf("volume %s: no primary address", id)
		}
		return resp.GetPrimaryNbdAddress(), nil
	}
}

// errNotRedundant means a volume is not back to full redundancy.
var errNotRedundant = errors.New("volume not at full redundancy")

// redundant says whether a located volume has three InSync replicas, on
// nodes that heartbeat, and a primary among them.
func redundant(resp *apiv1.LocateVolumeResponse) error {
	l := resp.GetLayout()
	inSync := 0
	for _, r := range l.GetReplicas() {
		if r.GetState() == apiv1.ReplicaState_REPLICA_STATE_IN_SYNC {
			inSync++
		}
	}
	switch {
	case inSync < 3:
		return fmt.Errorf("%w: %d InSync: %s", errNotRedundant, inSync, describeLayout(l))
	case len(resp.GetSilentNodeIds()) > 0:
		return fmt.Errorf("%w: silent nodes %v: %s", errNotRedundant, resp.GetSilentNodeIds(), describeLayout(l))
	case resp.GetPrimaryNbdAddress() == "":
		return fmt.Errorf("%w: primary not registered: %s", errNotRedundant, describeLayout(l))
	case len(l.GetReplicas()) != inSync:
		return fmt.Errorf("%w: replicas beyond the %d InSync: %s", errNotRedundant, inSync, describeLayout(l))
	}
	return spread(l)
}

// spread checks I6 when every zone has live nodes with room, as after a
// heal: each replica in its own zone, so on its own node too.
func spread(l *apiv1.Layout) error {
	zones := map[string]string{}
	for _, r := range l.GetReplicas() {
		if other, ok := zones[r.GetZone()]; ok {
			return fmt.Errorf("%w: replicas on %s and %s share %s while every zone has live nodes (I6): %s",
				errNotRedundant, other, r.GetNodeId(), r.GetZone(), describeLayout(l))
		}
		zones[r.GetZone()] = r.GetNodeId()
	}
	return nil
}

// waitRedundant waits until every volume is back to full redundancy.
func (c *cluster) waitRedundant(ctx context.Context, vols []*volume, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := c.checkRedundant(ctx, vols)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not back to full redundancy %s after the faults healed: %w", timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (c *cluster) checkRedundant(ctx context.Context, vols []*volume) error {
	var errs []error
	for _, v := range vols {
		resp, err := c.locate(ctx, v.id)
		if err == nil {
			err = redundant(resp)
		}
		if err == nil {
			err = c.serving(ctx, resp.GetLayout())
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("volume %s: %w", v.name, err))
		}
	}
	return errors.Join(errs...)
}

// serving checks that the record's primary serves the volume as primary:
// a record can be whole while its primary, restarted, serves nothing.
func (c *cluster) serving(ctx context.Context, l *apiv1.Layout) error {
	n := c.node(l.GetPrimary())
	if n == nil {
		return fmt.Errorf("%w: primary %q is no node of the cluster", errNotRedundant, l.GetPrimary())
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := n.client.GetVolume(ctx, &apiv1.GetVolumeRequest{VolumeId: l.GetVolumeId()})
	if err != nil {
		return fmt.Errorf("%w: primary %s: %v: %s", errNotRedundant, n.id, err, describeLayout(l))
	}
	if role := resp.GetVolume().GetRole(); role != apiv1.Role_ROLE_PRIMARY {
		return fmt.Errorf("%w: the record's primary %s does not serve the volume (role %s, epoch %d): %s",
			errNotRedundant, n.id, role, resp.GetVolume().GetEpoch(), describeLayout(l))
	}
	return nil
}

// describeLayout is a one-line summary: epoch, primary, replicas.
func describeLayout(l *apiv1.Layout) string {
	var reps []string
	for _, r := range l.GetReplicas() {
		st := strings.ToLower(strings.TrimPrefix(r.GetState().String(), "REPLICA_STATE_"))
		reps = append(reps, fmt.Sprintf("%s/%s/%s", r.GetNodeId(), r.GetZone(), st))
	}
	return fmt.Sprintf("epoch %d primary %s replicas [%s]", l.GetEpoch(), l.GetPrimary(), strings.Join(reps, " "))
}
