package broker

import (
	"context"

	"github.com/tetherhq/tether/audit"
)

// RecordAudit writes es into the broker's audit log as they are (IDs and
// times kept when set), for tests that need events an agent would
// deliver without running a data plane, and signs a checkpoint covering
// them.
func (b *Broker) RecordAudit(ctx context.Context, es ...audit.Event) error {
	if err := b.auditLog.RecordAll(ctx, es...); err != nil {
		return err
	}
	_, _, err := b.auditLog.Checkpoint(ctx)
	return err
}
