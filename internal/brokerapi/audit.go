package brokerapi

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"time"
)

// TenantAuditExport writes a tenant export of tenant's own events (by
// time in [since, until), zero meaning unbounded) to w, as the broker
// streams it.
func (c *Client) TenantAuditExport(ctx context.Context, tenant string, w io.Writer, since, until time.Time) error {
	v := url.Values{}
	if !since.IsZero() {
		v.Set("since", since.UTC().Format(time.RFC3339))
	}
	if !until.IsZero() {
		v.Set("until", until.UTC().Format(time.RFC3339))
	}
	return c.stream(ctx, "/api/v1/tenants/"+url.PathEscape(tenant)+"/audit/export?"+v.Encode(), w)
}

// TenantAuditPublicKey returns the audit log's verifier key through
// tenant's audit routes, which a customer approver may call.
func (c *Client) TenantAuditPublicKey(ctx context.Context, tenant string) (AuditPublicKey, error) {
	var out AuditPublicKey
	err := c.do(ctx, http.MethodGet, "/api/v1/tenants/"+url.PathEscape(tenant)+"/audit/public-key", nil, &out)
	return out, err
}
