// Package config reads and writes Tether's small configuration files: the
// CLI's cli.json, the agent's join.json, and the broker's server
// configuration, with secrets given by "env:NAME" or "file:PATH" reference.
//
// Every loader names the file and the field that is wrong and says what is
// accepted. Every writer writes a temporary file, syncs it and renames it
// into place, so a reader never sees half a file.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// MaxFileSize bounds every configuration file we read.
const MaxFileSize = 1 << 20

// CLI is cli.json: where the broker's API is and how to authenticate.
type CLI struct {
	// APIURL is the broker API's base URL, e.g. "http://127.0.0.1:8443".
	APIURL string `json:"api_url"`
	// Token is a static bearer token for the API: a dev broker's
	// bootstrap admin token, or an ID token obtained elsewhere (for
	// automation). It may be a literal or an env:/file: reference. A
	// Login, when present, is used instead.
	Token string `json:"token,omitempty"`
	// CAFile optionally names a PEM bundle to trust for an https APIURL.
	CAFile string `json:"ca_file,omitempty"`
	// Login holds the tokens of 'broker login'; 'broker logout' removes it.
	Login *Login `json:"login,omitempty"`
}

// Login is a user's OpenID Connect login, kept by the CLI.
type Login struct {
	// Issuer is the issuer's name in the broker's identity configuration.
	Issuer    string `json:"issuer"`
	IssuerURL string `json:"issuer_url"`
	ClientID  string `json:"client_id"`
	// IDToken is sent to the broker as the bearer token.
	IDToken string `json:"id_token"`
	// RefreshToken, when the issuer gave one, renews IDToken.
	RefreshToken string    `json:"refresh_token,omitempty"`
	Expiry       time.Time `json:"expiry"` // of IDToken
	Subject      string    `json:"subject,omitempty"`
	Email        string    `json:"email,omitempty"`
	// Tenant is the login's customer tenant; empty for the vendor's.
	Tenant string `json:"tenant,omitempty"`
	// DevUser is the dev broker's built-in user the login is, when it is
	// one: their approvals are signed without a browser, as they logged in.
	DevUser string `json:"dev_user,omitempty"`
}

// Validate reports the first problem with c.
func (c CLI) Validate() error {
	if err := checkURL("api_url", c.APIURL); err != nil {
		return err
	}
	if c.Login != nil {
		if err := checkURL("login.issuer_url", c.Login.IssuerURL); err != nil {
			return err
		}
		if c.Login.IDToken == "" || c.Login.ClientID == "" {
			return errors.New(`"login" is incomplete (no id_token or client_id): run 'broker login' again`)
		}
	}
	// No credentials is valid: 'broker login' fills them in, and the
	// client says so before calling.
	return nil
}

// Join is join.json: what an agent needs to join the broker's tailnet
// and recognise the broker.
type Join struct {
	// ControlURL is the tailnet's coordination server.
	ControlURL string `json:"control_url"`
	// AuthKey is a pre-auth key for the tailnet (literal or reference).
	AuthKey string `json:"auth_key"`
	// BrokerName is the broker's tailnet name (MagicDNS FQDN or hostname).
	BrokerName string `json:"broker_name"`
	// BrokerNames are the tailnet names of the other brokers that share
	// the broker's key and store, for an agent to fail over to.
	BrokerNames []string `json:"broker_names,omitempty"`
	// BrokerTag, if set, is the ACL tag every broker node carries (e.g.
	// tag:tether-broker): any node the control server gave it is a broker
	// candidate too. Either way a node is trusted only once it proves the
	// broker's key.
	BrokerTag string `json:"broker_tag,omitempty"`
	// BrokerKey is the broker's Ed25519 signing key, "ed25519:…".
	BrokerKey string `json:"broker_key"`
}

// Validate reports the first problem with j.
func (j Join) Validate() error {
	if err := checkURL("control_url", j.ControlURL); err != nil {
		return err
	}
	if j.AuthKey == "" {
		return errors.New(`"auth_key" is empty: want the tailnet pre-auth key (or env:NAME / file:PATH)`)
	}
	if j.BrokerName == "" && j.BrokerTag == "" {
		return errors.New(`"broker_name" is empty: want the broker's tailnet name, e.g. tether-broker.example.ts.net (or "broker_tag", the ACL tag every broker node carries)`)
	}
	if err := j.CheckBrokers(); err != nil {
		return err
	}
	if !strings.HasPrefix(j.BrokerKey, "ed25519:") {
		return errors.New(`"broker_key" must be the broker's public key, "ed25519:" followed by 43 base64url characters`)
	}
	return nil
}

// CheckBrokers reports the first problem with how j names the brokers
// besides BrokerName: the other names and the tag. An agent already
// paired checks them too, when it is given them again.
func (j Join) CheckBrokers() error {
	if len(j.BrokerNames) > MaxBrokerNames {
		return fmt.Errorf(`"broker_names" lists %d names: at most %d`, len(j.BrokerNames), MaxBrokerNames)
	}
	for _, n := range j.BrokerNames {
		if n == "" || strings.ContainsAny(n, " ,\t") {
			return fmt.Errorf(`"broker_names" holds %q: want tailnet names such as tether-broker-2.example.ts.net`, n)
		}
	}
	if t, ok := strings.CutPrefix(j.BrokerTag, "tag:"); j.BrokerTag != "" && (!ok || t == "" || strings.ContainsAny(t, " ,:\t")) {
		return fmt.Errorf(`"broker_tag" is %q: want an ACL tag such as tag:tether-broker`, j.BrokerTag)
	}
	return nil
}

// MaxBrokerNames bounds [Join.BrokerNames].
const MaxBrokerNames = 16

func checkURL(field, s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is %q: want an absolute http:// or https:// URL", field, s)
	}
	return nil
}

// validator is implemented by every file type.
type validator interface{ Validate() error }

// Load reads the JSON file at path into v and validates it. Unknown
// fields are errors, so a typo does not silently fall back to a default.
func Load(path string, v validator) error {
	if err := read(path, v); err != nil {
		return err
	}
	if err := v.Validate(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// LoadWith is Load with the validation named statically, as a method
// expression such as (*Join).Validate, for the agent: a Validate() error
// called through an interface anywhere in a binary makes the linker keep
// kong's Context.Validate, whose reflective method lookup (MethodByName
// with a variable name) then makes it keep every exported method of every
// type — 11 MB more for the agent, over its 40 MB budget (e2e
// TestAgentBinarySize).
func LoadWith[T any](path string, v *T, validate func(*T) error) error {
	if err := read(path, v); err != nil {
		return err
	}
	if err := validate(v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// read reads the JSON file at path into v, refusing unknown fields.
func read(path string, v any) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, errors.Unwrap(err))
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > MaxFileSize {
		return fmt.Errorf("read %s: larger than %d bytes", path, MaxFileSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s is not valid: %s", path, describeJSONError(b, err))
	}
	if dec.More() {
		return fmt.Errorf("%s is not valid: more than one JSON object", path)
	}
	return nil
}

func describeJSONError(b []byte, err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		line := 1 + bytes.Count(b[:min(int(se.Offset), len(b))], []byte("\n"))
		return fmt.Sprintf("JSON syntax error on line %d: %v", line, se)
	}
	if errors.Is(err, io.EOF) {
		return "the file is empty: want a JSON object"
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return "the JSON ends before the object is complete (truncated file?)"
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("field %q: want a %v, got JSON %s", te.Field, te.Type, te.Value)
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

// Write writes v as indented JSON to path with the given mode, atomically:
// a temporary file in the same directory is written, synced, and renamed.
func Write(path string, v any, mode os.FileMode) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return WriteFile(path, append(b, '\n'), mode)
}

// WriteFile writes b to path atomically with the given mode.
func WriteFile(path string, b []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(b); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// PrepareDir creates dir (mode 0700) if needed and checks it is writable,
// so that a bad directory is reported at start, naming what it is for,
// rather than half-way through writing state.
func PrepareDir(what, dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("%s %s: %w", what, dir, errors.Unwrap(err))
	}
	f, err := os.CreateTemp(dir, ".write-check-*")
	if err != nil {
		return fmt.Errorf("%s %s is not writable: %w", what, dir, errors.Unwrap(err))
	}
	f.Close()
	os.Remove(f.Name())
	return nil
}

// Secret resolves a secret value: "env:NAME" reads environment variable
// NAME, "file:PATH" reads the file (trailing newline trimmed), anything
// else is the literal value. The error never contains the secret.
func Secret(ref string) (string, error) {
	switch {
	case strings.HasPrefix(ref, "env:"):
		name := strings.TrimPrefix(ref, "env:")
		v, ok := os.LookupEnv(name)
		if !ok || v == "" {
			return "", fmt.Errorf("secret reference %s: environment variable %s is not set", ref, name)
		}
		return v, nil
	case strings.HasPrefix(ref, "file:"):
		path := strings.TrimPrefix(ref, "file:")
		f, err := os.Open(path)
		if err != nil {
			return "", fmt.Errorf("secret reference %s: %w", ref, errors.Unwrap(err))
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, 64<<10))
		if err != nil {
			return "", fmt.Errorf("secret reference %s: %w", ref, err)
		}
		v := strings.TrimRight(string(b), "\r\n")
		if v == "" {
			return "", fmt.Errorf("secret reference %s: the file is empty", ref)
		}
		return v, nil
	default:
		return ref, nil
	}
}
