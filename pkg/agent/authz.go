package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/trireme-csi/trireme/pkg/api"
	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/certs"
)

// nodeAPIRules says who may call what on the Node API: the controller
// changes replicas and layouts; the controller and operators read them.
// A node agent may do neither, and a method with no rule is refused.
func nodeAPIRules() api.Rules {
	mutate := controllerOnly
	read := api.AllowRoles(certs.RoleController, certs.RoleAdmin)
	return api.Rules{
		apiv1.Node_CreateReplica_FullMethodName:   mutate,
		apiv1.Node_DeleteReplica_FullMethodName:   mutate,
		apiv1.Node_SetLayout_FullMethodName:       mutate,
		apiv1.Node_ExpandReplica_FullMethodName:   mutate,
		apiv1.Node_GetVolume_FullMethodName:       read,
		apiv1.Node_ListVolumes_FullMethodName:     read,
		apiv1.Node_ChecksumReplica_FullMethodName: read,
	}
}

// controllerOnly admits the controller alone.
func controllerOnly(_ context.Context, caller certs.Peer, _ any) error {
	switch caller.Role {
	case certs.RoleController:
		return nil
	case certs.RoleNode:
		return fmt.Errorf("%w: a node agent cannot change volume records (%s)", api.ErrDenied, caller)
	}
	return fmt.Errorf("%w: only the controller changes replicas, not %s", api.ErrDenied, caller)
}

// Errors of NBD export authorization.
var (
	// errExportDenied means the client's certificate may not open the
	// export.
	errExportDenied = errors.New("export not allowed for this client")
)

// publishedTTL is how long the NBD server trusts what the controller
// said about a volume's attachment.
const publishedTTL = 2 * time.Second

// exportAuthorizer decides which NBD client may open which export: an
// operator (admin) any, under any name; a frontend only a volume attached
// to its own node, as the controller records it, and only under the
// attachment generation of that publish (api.ExportName), so that the
// primary fences its connection once the volume is published elsewhere.
// A frontend may not use the bare volume id, nor a generation the
// controller has not handed out: the primary fences neither. Anything
// else opens nothing.
type exportAuthorizer struct {
	// published returns the node a volume is attached to and the
	// attachment generation of that publish.
	published func(ctx context.Context, volumeID string) (attachment, error)
	now       func() time.Time

	mu    sync.Mutex
	cache map[string]publishedEntry
}

// attachment is where the controller says a volume is published.
type attachment struct {
	node       string
	generation uint64
}

type publishedEntry struct {
	attachment
	expires time.Time
}

func newExportAuthorizer(published func(ctx context.Context, volumeID string) (attachment, error)) *exportAuthorizer {
	return &exportAuthorizer{published: published, now: time.Now, cache: map[string]publishedEntry{}}
}

// authorize implements nbd.Options.Authorize.
func (e *exportAuthorizer) authorize(cert *x509.Certificate, export string) error {
	if cert == nil {
		return fmt.Errorf("%w: no client certificate", errExportDenied)
	}
	caller, err := certs.PeerOf(cert)
	if err != nil {
		return fmt.Errorf("%w: %w", errExportDenied, err)
	}
	switch caller.Role {
	case certs.RoleAdmin:
		return nil
	case certs.RoleFrontend:
	default:
		return fmt.Errorf("%w: %s opens no volume", errExportDenied, caller)
	}
	id, gen, err := api.ParseExportName(export)
	if err != nil {
		return fmt.Errorf("%w: %w", errExportDenied, err)
	}
	if gen == 0 {
		return fmt.Errorf("%w: a frontend opens a volume under its attachment generation, not as %q", errExportDenied, export)
	}
	at, err := e.attachmentOf(id, caller.Name, gen)
	if err != nil {
		return fmt.Errorf("%w: attachment of %s unknown: %w", errExportDenied, id, err)
	}
	switch {
	case at.node != caller.Name:
		return fmt.Errorf("%w: volume %s is not attached to node %q", errExportDenied, id, caller.Name)
	case gen > at.generation:
		return fmt.Errorf("%w: volume %s was published at generation %d, not %d", errExportDenied, id, at.generation, gen)
	}
	return nil
}

// attachmentOf returns where a volume is attached. A cached answer naming
// node at generation gen or later, younger than publishedTTL, is used as
// it is; any other answer is asked of the controller again, so that a
// volume just published to this node is not refused on a stale answer.
func (e *exportAuthorizer) attachmentOf(id, node string, gen uint64) (attachment, error) {
	now := e.now()
	e.mu.Lock()
	entry, ok := e.cache[id]
	e.mu.Unlock()
	if ok && entry.node == node && gen <= entry.generation && now.Before(entry.expires) {
		return entry.attachment, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), locateTimeout)
	defer cancel()
	at, err := e.published(ctx, id)
	if err != nil {
		return attachment{}, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for k, v := range e.cache {
		if !now.Before(v.expires) {
			delete(e.cache, k)
		}
	}
	e.cache[id] = publishedEntry{attachment: at, expires: now.Add(publishedTTL)}
	return at, nil
}
