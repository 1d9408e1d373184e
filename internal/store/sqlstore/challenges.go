package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/tetherhq/tether/internal/store"
)

var _ store.ChallengeStore = (*Store)(nil)

// PutAgentChallenge implements [store.ChallengeStore]. The upsert on
// (agent, node) keeps one challenge per pair even when two brokers give
// the same pair a challenge at once. Brokers putting at once may each
// count only their own, so the table can hold a few more than max.
func (s *Store) PutAgentChallenge(ctx context.Context, c store.AgentChallenge, max int, now time.Time) (bool, error) {
	if max < 1 {
		return false, fmt.Errorf("store challenge of agent %s: max %d, want at least 1", c.AgentID, max)
	}
	ok := false
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM agent_challenges WHERE expires_at_ms <= $1`, millis(now)); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM agent_challenges WHERE NOT (agent_id = $1 AND node_id = $2)`, c.AgentID, c.NodeID).Scan(&n); err != nil {
			return err
		}
		if n >= max {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `
			INSERT INTO agent_challenges (challenge_hash, agent_id, node_id, expires_at_ms) VALUES ($1, $2, $3, $4)
			ON CONFLICT (agent_id, node_id) DO UPDATE SET challenge_hash = excluded.challenge_hash, expires_at_ms = excluded.expires_at_ms`,
			c.Hash[:], c.AgentID, c.NodeID, millis(c.Expires)); err != nil {
			return err
		}
		ok = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("store challenge of agent %s: %w", c.AgentID, err)
	}
	return ok, nil
}

// TakeAgentChallenge implements [store.ChallengeStore]: one DELETE …
// RETURNING, so that of two brokers taking one challenge only one gets
// the row.
func (s *Store) TakeAgentChallenge(ctx context.Context, hash [32]byte, now time.Time) (store.AgentChallenge, error) {
	c := store.AgentChallenge{Hash: hash}
	var exp int64
	err := s.db.QueryRowContext(ctx, `DELETE FROM agent_challenges WHERE challenge_hash = $1 RETURNING agent_id, node_id, expires_at_ms`, hash[:]).
		Scan(&c.AgentID, &c.NodeID, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return store.AgentChallenge{}, fmt.Errorf("take agent challenge: %w", store.ErrNotFound)
	}
	if err != nil {
		return store.AgentChallenge{}, fmt.Errorf("take agent challenge: %w", err)
	}
	if exp <= millis(now) {
		return store.AgentChallenge{}, fmt.Errorf("take agent challenge: expired: %w", store.ErrNotFound)
	}
	c.Expires = fromMillis(exp)
	return c, nil
}

// AgentChallenges implements [store.ChallengeStore].
func (s *Store) AgentChallenges(ctx context.Context, now time.Time) (int, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM agent_challenges WHERE expires_at_ms > $1`, millis(now)).Scan(&n); err != nil {
		return 0, fmt.Errorf("count agent challenges: %w", err)
	}
	return n, nil
}
