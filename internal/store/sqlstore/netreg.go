package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/tetherhq/tether/internal/store"
)

// A network registration is stored in network_registrations as its JSON,
// the data column, which is all a read decodes besides the sealed external
// ID, kept in a column of its own and never in data. tenant, account_id,
// state and version are derived from the registration on every write; the
// unique account_id is what keeps an account to one tenant.

// CreateNetworkRegistration implements [store.Store].
func (s *Store) CreateNetworkRegistration(ctx context.Context, reg store.NetworkRegistration) error {
	data, err := registrationJSON(reg)
	if err != nil {
		return fmt.Errorf("create network registration %s: %w", reg.ID, err)
	}
	_, err = s.db.ExecContext(ctx, `
		INSERT INTO network_registrations (id, tenant, account_id, state, version, data, sealed_external_id)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		reg.ID, reg.Tenant, reg.AccountID, reg.State, reg.Version, data, nullBytes(reg.SealedExternalID))
	if err != nil && s.d.IsUniqueViolation(err) {
		return fmt.Errorf("create network registration of account %s: %w", reg.AccountID, store.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("create network registration %s: %w", reg.ID, err)
	}
	return nil
}

const registrationQuery = `SELECT data, sealed_external_id FROM network_registrations`

// GetNetworkRegistration implements [store.Store].
func (s *Store) GetNetworkRegistration(ctx context.Context, id string) (store.NetworkRegistration, error) {
	reg, err := scanRegistration(s.db.QueryRowContext(ctx, registrationQuery+` WHERE id = $1`, id))
	if err != nil {
		return store.NetworkRegistration{}, fmt.Errorf("get network registration %s: %w", id, notFound(err))
	}
	return reg, nil
}

// GetNetworkRegistrationByAccount implements [store.Store].
func (s *Store) GetNetworkRegistrationByAccount(ctx context.Context, accountID string) (store.NetworkRegistration, error) {
	reg, err := scanRegistration(s.db.QueryRowContext(ctx, registrationQuery+` WHERE account_id = $1`, accountID))
	if err != nil {
		return store.NetworkRegistration{}, fmt.Errorf("get network registration of account %s: %w", accountID, notFound(err))
	}
	return reg, nil
}

// ListNetworkRegistrations implements [store.Store].
func (s *Store) ListNetworkRegistrations(ctx context.Context, tenant string) ([]store.NetworkRegistration, error) {
	query, args := registrationQuery+` ORDER BY tenant, account_id`, []any(nil)
	if tenant != "" {
		query, args = registrationQuery+` WHERE tenant = $1 ORDER BY tenant, account_id`, []any{tenant}
	}
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list network registrations: %w", err)
	}
	defer rows.Close()
	var all []store.NetworkRegistration
	for rows.Next() {
		reg, err := scanRegistration(rows)
		if err != nil {
			return nil, fmt.Errorf("list network registrations: %w", err)
		}
		all = append(all, reg)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list network registrations: %w", err)
	}
	return all, nil
}

// UpdateNetworkRegistration implements [store.Store].
func (s *Store) UpdateNetworkRegistration(ctx context.Context, reg store.NetworkRegistration) error {
	next := reg
	next.Version = reg.Version + 1
	data, err := registrationJSON(next)
	if err != nil {
		return fmt.Errorf("update network registration %s: %w", reg.ID, err)
	}
	res, err := s.db.ExecContext(ctx, `
		UPDATE network_registrations SET state = $1, version = $2, data = $3, sealed_external_id = $4
		WHERE id = $5 AND version = $6 AND tenant = $7 AND account_id = $8`,
		next.State, next.Version, data, nullBytes(next.SealedExternalID), reg.ID, reg.Version, reg.Tenant, reg.AccountID)
	if err != nil {
		return fmt.Errorf("update network registration %s: %w", reg.ID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("update network registration %s: %w", reg.ID, err)
	}
	if n > 0 {
		return nil
	}
	var version int64
	var tenant, account string
	err = s.db.QueryRowContext(ctx, `SELECT version, tenant, account_id FROM network_registrations WHERE id = $1`, reg.ID).Scan(&version, &tenant, &account)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("update network registration %s: %w", reg.ID, store.ErrNotFound)
	case err != nil:
		return fmt.Errorf("update network registration %s: read stored version: %w", reg.ID, err)
	case tenant != reg.Tenant || account != reg.AccountID:
		return fmt.Errorf("update network registration %s: tenant and account never change (stored %s, %s)", reg.ID, tenant, account)
	default:
		return fmt.Errorf("update network registration %s: version %d is not the stored %d: %w", reg.ID, reg.Version, version, store.ErrConflict)
	}
}

// DeleteNetworkRegistration implements [store.Store].
func (s *Store) DeleteNetworkRegistration(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM network_registrations WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("delete network registration %s: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("delete network registration %s: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("delete network registration %s: %w", id, store.ErrNotFound)
	}
	return nil
}

// registrationJSON encodes reg's data column, its times as stored. The
// sealed external ID is not part of it.
func registrationJSON(reg store.NetworkRegistration) (string, error) {
	if reg.ID == "" {
		return "", fmt.Errorf("registration has no ID")
	}
	reg.CreatedAt = storedTime(reg.CreatedAt)
	reg.ConfirmedAt = storedTime(reg.ConfirmedAt)
	b, err := json.Marshal(reg)
	if err != nil {
		return "", fmt.Errorf("encode registration: %w", err)
	}
	return string(b), nil
}

// scanRegistration reads a row of registrationQuery.
func scanRegistration(row interface{ Scan(...any) error }) (store.NetworkRegistration, error) {
	var data string
	var sealed []byte
	if err := row.Scan(&data, &sealed); err != nil {
		return store.NetworkRegistration{}, err
	}
	var reg store.NetworkRegistration
	if err := json.Unmarshal([]byte(data), &reg); err != nil {
		return store.NetworkRegistration{}, fmt.Errorf("decode registration: %w", err)
	}
	if len(sealed) > 0 {
		reg.SealedExternalID = sealed
	}
	return reg, nil
}

// nullBytes stores an empty slice as NULL.
func nullBytes(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}
