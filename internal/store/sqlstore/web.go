package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/tetherhq/tether/internal/store"
)

// webTable returns the table holding web entries of kind. The names are
// constants: nothing a caller passes reaches the SQL.
func webTable(kind string) (string, error) {
	switch kind {
	case store.WebSession:
		return "web_sessions", nil
	case store.WebPending:
		return "web_pending", nil
	}
	return "", fmt.Errorf("unknown kind of web entry %q", kind)
}

// checkWeb checks a web entry's kind, key and value against the bounds
// of [store.WebStore].
func checkWeb(kind string, key, value []byte) (string, error) {
	table, err := webTable(kind)
	if err != nil {
		return "", err
	}
	if len(key) != store.WebKeyLen {
		return "", fmt.Errorf("web %s key is %d bytes, want a %d-byte hash", kind, len(key), store.WebKeyLen)
	}
	if len(value) > store.MaxWebValue {
		return "", fmt.Errorf("web %s value is %d bytes, more than the %d allowed", kind, len(value), store.MaxWebValue)
	}
	return table, nil
}

// PutWeb implements [store.WebStore]. Every expired entry of the kind is
// removed (at most max and a few concurrent ones: the rest were evicted
// before), then the oldest by insertion past max. Brokers putting at once
// may each count only their own insert, so the table can hold a few more
// than max until the next put.
func (s *Store) PutWeb(ctx context.Context, kind string, key, value []byte, expires time.Time, max int, now time.Time) (int, error) {
	table, err := checkWeb(kind, key, value)
	if err != nil {
		return 0, fmt.Errorf("put web %s: %w", kind, err)
	}
	if max < 1 {
		return 0, fmt.Errorf("put web %s: max %d, want at least 1", kind, max)
	}
	var evicted int
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE key_hash = $1 OR expires_at <= $2`, key, millis(now)); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO `+table+` (key_hash, value, expires_at) VALUES ($1, $2, $3)`, key, value, millis(expires)); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+table).Scan(&n); err != nil {
			return err
		}
		if n <= max {
			return nil
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE seq IN (SELECT seq FROM `+table+` ORDER BY seq LIMIT $1)`, n-max)
		if err != nil {
			return err
		}
		rows, err := res.RowsAffected()
		evicted = int(rows)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("put web %s: %w", kind, err)
	}
	return evicted, nil
}

// GetWeb implements [store.WebStore].
func (s *Store) GetWeb(ctx context.Context, kind string, key []byte, now time.Time) ([]byte, bool, error) {
	table, err := checkWeb(kind, key, nil)
	if err != nil {
		return nil, false, fmt.Errorf("get web %s: %w", kind, err)
	}
	var value []byte
	err = s.db.QueryRowContext(ctx, `SELECT value FROM `+table+` WHERE key_hash = $1 AND expires_at > $2`, key, millis(now)).Scan(&value)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("get web %s: %w", kind, err)
	}
	return value, true, nil
}

// TakeWeb implements [store.WebStore]: one DELETE … RETURNING, so that of
// two brokers taking one entry only one gets a row.
func (s *Store) TakeWeb(ctx context.Context, kind string, key []byte, now time.Time) ([]byte, bool, error) {
	table, err := checkWeb(kind, key, nil)
	if err != nil {
		return nil, false, fmt.Errorf("take web %s: %w", kind, err)
	}
	var value []byte
	var expires int64
	err = s.db.QueryRowContext(ctx, `DELETE FROM `+table+` WHERE key_hash = $1 RETURNING value, expires_at`, key).Scan(&value, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("take web %s: %w", kind, err)
	}
	if expires <= millis(now) {
		return nil, false, nil
	}
	return value, true, nil
}

// UpdateWeb implements [store.WebStore].
func (s *Store) UpdateWeb(ctx context.Context, kind string, key, value []byte, expires, now time.Time) (bool, error) {
	table, err := checkWeb(kind, key, value)
	if err != nil {
		return false, fmt.Errorf("update web %s: %w", kind, err)
	}
	res, err := s.db.ExecContext(ctx, `UPDATE `+table+` SET value = $1, expires_at = $2 WHERE key_hash = $3 AND expires_at > $4`,
		value, millis(expires), key, millis(now))
	if err != nil {
		return false, fmt.Errorf("update web %s: %w", kind, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("update web %s: %w", kind, err)
	}
	return n > 0, nil
}
