package sqlstore

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tetherhq/tether/internal/store"
)

var _ store.WebhookQueue = (*Store)(nil)

// AddWebhookDeliveries implements [store.WebhookQueue]. Brokers adding
// to one lane at once may each trim only to what they counted, so a
// lane can hold a few more than max until the next add.
func (s *Store) AddWebhookDeliveries(ctx context.Context, ds []store.WebhookDelivery, max int) ([]store.WebhookDelivery, error) {
	if max < 1 {
		return nil, fmt.Errorf("queue webhook deliveries: max %d, want at least 1", max)
	}
	for _, d := range ds {
		if d.Lane == "" || d.MessageID == "" {
			return nil, fmt.Errorf("queue webhook delivery %q: no lane or message ID", d.MessageID)
		}
		if len(d.Body) > store.MaxWebhookBody {
			return nil, fmt.Errorf("queue webhook delivery %s: body of %d bytes, more than the %d allowed", d.MessageID, len(d.Body), store.MaxWebhookBody)
		}
	}
	var dropped []store.WebhookDelivery
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		dropped = nil
		var lanes []string
		for _, d := range ds {
			if _, err := tx.ExecContext(ctx, `
				INSERT INTO webhook_deliveries (lane, msg_id, type, body, attempts, next_at_ms, created_at_ms)
				VALUES ($1, $2, $3, $4, $5, $6, $7)`,
				d.Lane, d.MessageID, d.Type, d.Body, d.Attempts, millis(d.NextAt), millis(d.CreatedAt)); err != nil {
				return err
			}
			if !slices.Contains(lanes, d.Lane) {
				lanes = append(lanes, d.Lane)
			}
		}
		for _, lane := range lanes {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM webhook_deliveries WHERE lane = $1`, lane).Scan(&n); err != nil {
				return err
			}
			if n <= max {
				continue
			}
			rows, err := tx.QueryContext(ctx, `
				DELETE FROM webhook_deliveries WHERE seq IN (
					SELECT seq FROM webhook_deliveries WHERE lane = $1 ORDER BY seq LIMIT $2)
				RETURNING `+deliveryColumns, lane, n-max)
			if err != nil {
				return err
			}
			got, err := scanDeliveries(rows)
			if err != nil {
				return err
			}
			dropped = append(dropped, got...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("queue %d webhook deliveries: %w", len(ds), err)
	}
	slices.SortFunc(dropped, func(a, b store.WebhookDelivery) int { return cmp.Compare(a.Seq, b.Seq) })
	return dropped, nil
}

const deliveryColumns = `seq, lane, msg_id, type, body, attempts, next_at_ms, created_at_ms`

func scanDelivery(row rowScanner) (store.WebhookDelivery, error) {
	var d store.WebhookDelivery
	var next, created int64
	if err := row.Scan(&d.Seq, &d.Lane, &d.MessageID, &d.Type, &d.Body, &d.Attempts, &next, &created); err != nil {
		return store.WebhookDelivery{}, err
	}
	d.NextAt, d.CreatedAt = fromMillis(next), fromMillis(created)
	return d, nil
}

func scanDeliveries(rows *sql.Rows) ([]store.WebhookDelivery, error) {
	defer rows.Close()
	var out []store.WebhookDelivery
	for rows.Next() {
		d, err := scanDelivery(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// ClaimWebhookDelivery implements [store.WebhookQueue] with one UPDATE …
// RETURNING. Where the dialect locks rows (PostgreSQL), the oldest due
// row is selected FOR UPDATE SKIP LOCKED, so that concurrent claimers
// take different rows instead of queueing on one, and the lease is
// checked again on the row as locked, so that a row another claimer
// took meanwhile is not taken twice. SQLite runs one writer at a time.
func (s *Store) ClaimWebhookDelivery(ctx context.Context, lane, claimer string, now, leaseUntil time.Time) (store.WebhookDelivery, bool, error) {
	if claimer == "" {
		return store.WebhookDelivery{}, false, errors.New("claim webhook delivery: no claimer")
	}
	lock := ""
	if s.d.ForUpdate != "" {
		lock = s.d.ForUpdate + " SKIP LOCKED"
	}
	row := s.db.QueryRowContext(ctx, `
		UPDATE webhook_deliveries SET claimed_by = $1, lease_until_ms = $2
		WHERE seq = (
			SELECT seq FROM webhook_deliveries
			WHERE lane = $3 AND next_at_ms <= $4 AND lease_until_ms <= $4
			ORDER BY seq LIMIT 1`+lock+`)
		AND next_at_ms <= $4 AND lease_until_ms <= $4
		RETURNING `+deliveryColumns,
		claimer, millis(leaseUntil), lane, millis(now))
	d, err := scanDelivery(row)
	if errors.Is(err, sql.ErrNoRows) {
		return store.WebhookDelivery{}, false, nil
	}
	if err != nil {
		return store.WebhookDelivery{}, false, fmt.Errorf("claim webhook delivery: %w", err)
	}
	return d, true, nil
}

// RescheduleWebhookDelivery implements [store.WebhookQueue].
func (s *Store) RescheduleWebhookDelivery(ctx context.Context, seq int64, claimer string, attempts int, next, leaseUntil time.Time) (bool, error) {
	newClaimer, lease := claimer, millis(leaseUntil)
	if leaseUntil.IsZero() {
		newClaimer, lease = "", 0
	}
	res, err := s.db.ExecContext(ctx, `
		UPDATE webhook_deliveries SET attempts = $1, next_at_ms = $2, claimed_by = $3, lease_until_ms = $4
		WHERE seq = $5 AND claimed_by = $6`,
		attempts, millis(next), newClaimer, lease, seq, claimer)
	if err != nil {
		return false, fmt.Errorf("reschedule webhook delivery %d: %w", seq, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("reschedule webhook delivery %d: %w", seq, err)
	}
	return n > 0, nil
}

// DeleteWebhookDelivery implements [store.WebhookQueue].
func (s *Store) DeleteWebhookDelivery(ctx context.Context, seq int64) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM webhook_deliveries WHERE seq = $1`, seq); err != nil {
		return fmt.Errorf("delete webhook delivery %d: %w", seq, err)
	}
	return nil
}

// WebhookLanes implements [store.WebhookQueue].
func (s *Store) WebhookLanes(ctx context.Context, now time.Time) ([]store.WebhookLane, error) {
	rows, err := s.db.QueryContext(ctx, `
		SELECT lane, COUNT(*), COALESCE(SUM(CASE WHEN next_at_ms <= $1 AND lease_until_ms <= $1 THEN 1 ELSE 0 END), 0)
		FROM webhook_deliveries GROUP BY lane ORDER BY lane`, millis(now))
	if err != nil {
		return nil, fmt.Errorf("count webhook deliveries: %w", err)
	}
	defer rows.Close()
	var out []store.WebhookLane
	for rows.Next() {
		var l store.WebhookLane
		if err := rows.Scan(&l.Lane, &l.Pending, &l.Due); err != nil {
			return nil, fmt.Errorf("count webhook deliveries: %w", err)
		}
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count webhook deliveries: %w", err)
	}
	return out, nil
}

// SweepWebhookDeliveries implements [store.WebhookQueue].
func (s *Store) SweepWebhookDeliveries(ctx context.Context, before time.Time) (int, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM webhook_deliveries WHERE created_at_ms < $1`, millis(before))
	if err != nil {
		return 0, fmt.Errorf("sweep webhook deliveries: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("sweep webhook deliveries: %w", err)
	}
	return int(n), nil
}
