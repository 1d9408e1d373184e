// Package devtickets is the dev broker's ticket source: a fixture of
// tickets it vouches for without GitHub, so that the tour can show
// break-glass (which needs a verified ticket labelled sev1) on a laptop.
// Only the dev build links it; the dev preset plugs it in by implementing
// broker.TicketSource (embed a [Source]).
package devtickets

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/tetherhq/tether/policy"
)

// Fixture lists the tickets a dev broker knows, open, with their labels.
var Fixture = []policy.Ticket{
	{Ref: "tether/demo#1", Verified: true, State: "open", Labels: []string{"sev1"}},
	{Ref: "tether/demo#2", Verified: true, State: "open", Labels: []string{"sev3"}},
}

// Source answers from [Fixture]. Its zero value is ready.
type Source struct{}

// Ticket returns a fixture ticket verified; any other reference goes to
// the policy unverified (a dev broker needs no ticket), saying why.
func (Source) Ticket(_ context.Context, ref string) (policy.Ticket, string, error) {
	i := slices.IndexFunc(Fixture, func(t policy.Ticket) bool { return t.Ref == ref })
	if i >= 0 {
		t := Fixture[i]
		t.Labels = slices.Clone(t.Labels)
		return t, "", nil
	}
	refs := make([]string, 0, len(Fixture))
	for _, t := range Fixture {
		refs = append(refs, fmt.Sprintf("%s (%s)", t.Ref, strings.Join(t.Labels, ", ")))
	}
	return policy.Ticket{Ref: ref}, fmt.Sprintf("this dev broker has no GitHub and knows only the tickets of its fixture: %s", strings.Join(refs, ", ")), nil
}
