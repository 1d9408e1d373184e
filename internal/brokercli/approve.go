package brokercli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/oauth2"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/cli"
	"github.com/tetherhq/tether/internal/config"
)

type requestApproveCmd struct {
	requestArg
	Comment    string        `placeholder:"C" help:"a comment for the requester and the audit log"`
	Duration   time.Duration `placeholder:"D" help:"customer approvers: approve a shorter window than asked, starting now"`
	Scopes     []string      `placeholder:"S" help:"customer approvers: approve only these of the scopes asked for (comma-separated)"`
	Device     bool          `help:"customer approvers: sign with the device flow instead of a browser on this machine (only where the identity provider puts the nonce in device-flow tokens)"`
	PlanDigest string        `name:"plan-digest" placeholder:"D" help:"for a network change: the plan digest 'request show' printed; the approval is refused if the plan is not that one"`
	clientFlags
	outputFlag
}

func (c *requestApproveCmd) Help() string {
	return `A customer approver's approval is a signing ceremony: the broker states the
exact terms (request, deployment, agent, engineer, scopes and window), and you
sign in again at your own identity provider with the digest of that statement
as the nonce. The ID token that comes back is the proof your agent checks
before it serves the grant, so nobody at the vendor can grant what you did not
sign. --duration and --scopes narrow what you approve.`
}

func (c *requestApproveCmd) Run(e *env) error {
	ctx, stdout := e.ctx, e.stdout
	if err := checkRequestID("approve", c.ID); err != nil {
		return err
	}
	if err := c.outputFlag.check(); err != nil {
		return err
	}
	if c.Duration < 0 || c.Duration%time.Second != 0 {
		return cli.Usagef("--duration %s: want a positive duration in whole seconds, such as 30m", c.Duration)
	}
	cfg, bc, err := clientConfig(ctx, c.Config)
	if err != nil {
		return err
	}
	who, err := bc.Whoami(ctx)
	if err != nil {
		return err
	}
	customer := who.Tenant != ""
	if customer && cfg.Login == nil {
		return cli.Usagef("a customer approver signs approvals at their identity provider: sign in with 'broker login --issuer %s' first", who.IssuerName)
	}
	narrow := brokerapi.ApprovalStatementBody{Scopes: c.Scopes}
	if c.Duration > 0 {
		narrow.Duration = c.Duration.String()
	}
	switch {
	case c.PlanDigest != "" && (c.Duration > 0 || len(c.Scopes) > 0):
		return cli.Usagef("--duration and --scopes narrow access approvals; a network change is approved by --plan-digest alone")
	case !customer && (c.Duration > 0 || len(c.Scopes) > 0 || c.Device):
		return cli.Usagef("--duration, --scopes and --device are for customer approvers, who sign their approvals; you are logged in as vendor staff")
	}
	var r brokerapi.AccessRequest
	if customer && c.PlanDigest == "" {
		bc.SetSigner(func(ctx context.Context, st brokerapi.ApprovalStatement) (string, error) {
			printStatement(e.stderr, st)
			return signStatement(ctx, bc, *cfg.Login, st, c.Device, e.stderr)
		})
		r, err = bc.ApproveWith(ctx, c.ID, c.Comment, narrow)
	} else {
		r, err = bc.ApprovePlan(ctx, c.ID, c.Comment, c.PlanDigest)
	}
	if err != nil {
		return err
	}
	if c.outputFlag.json() {
		return printJSON(stdout, r)
	}
	printApproved(stdout, r)
	return nil
}

func printApproved(w io.Writer, r brokerapi.AccessRequest) {
	fmt.Fprintf(w, "Approved request %s; it is now %s.\n", r.ID, r.State)
	if r.State == brokerapi.StatePending && len(r.Waiting) > 0 {
		fmt.Fprintf(w, "Still waiting for %s.\n", strings.Join(r.Waiting, "; "))
	}
}

// printStatement shows the approver what they are about to sign.
func printStatement(w io.Writer, st brokerapi.ApprovalStatement) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "You are signing, at %s:\n", st.Issuer)
	fmt.Fprintf(tw, "  scopes:\t%s\n", strings.Join(st.Scopes, ", "))
	fmt.Fprintf(tw, "  window:\t%s to %s (%s)\n", st.NotBefore.Local().Format(time.RFC3339), st.NotAfter.Local().Format(time.RFC3339), st.NotAfter.Sub(st.NotBefore))
	fmt.Fprintf(tw, "  agent:\t%s\n", st.Agent)
	fmt.Fprintf(tw, "  digest:\t%s\n", st.Digest)
	tw.Flush()
}

// signStatement is the signing ceremony: a sign-in at the approver's
// identity provider whose nonce is the statement's digest. On a dev
// broker, a login made with --dev-user signs without a browser.
func signStatement(ctx context.Context, bc *brokerapi.Client, l config.Login, st brokerapi.ApprovalStatement, device bool, stderr io.Writer) (string, error) {
	if st.Issuer != l.IssuerURL {
		return "", fmt.Errorf("the broker asks you to sign at %s, but you logged in at %s: log in again", st.Issuer, l.IssuerURL)
	}
	ac, err := bc.AuthConfig(ctx, l.Issuer)
	if err != nil {
		return "", fmt.Errorf("ask the broker how to sign in with %s: %w", l.Issuer, err)
	}
	var is brokerapi.AuthIssuer
	for _, x := range ac.Issuers {
		if x.Name == l.Issuer {
			is = x
		}
	}
	if is.IssuerURL != l.IssuerURL {
		return "", fmt.Errorf("the broker no longer offers identity provider %s at %s: log in again", l.Issuer, l.IssuerURL)
	}
	// The proof needs no refresh token.
	is.Scopes = slices.DeleteFunc(slices.Clone(is.Scopes), func(s string) bool { return s == "offline_access" })
	octx, hc, oc, err := oauthClient(ctx, is)
	if err != nil {
		return "", err
	}
	var tok *oauth2.Token
	switch {
	case l.DevUser != "" || device:
		if oc.Endpoint.DeviceAuthURL == "" {
			return "", fmt.Errorf("identity provider %s offers no device flow: sign without --device", is.Name)
		}
		tok, err = deviceLogin(octx, oc, l.DevUser, st.Digest, hc, stderr)
	default:
		tok, err = loopbackLogin(octx, oc, st.Digest, stderr)
	}
	if err != nil {
		return "", err
	}
	idTok, _ := tok.Extra("id_token").(string)
	switch {
	case idTok == "":
		return "", fmt.Errorf("identity provider %s returned no ID token", is.Name)
	case claimString(idTok, "nonce") != st.Digest:
		return "", errors.New("the identity provider did not put the statement's digest in the ID token's nonce (some providers drop it in the device flow: sign without --device)")
	}
	return idTok, nil
}
