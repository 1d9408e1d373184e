package audit

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
)

// Checkpoint is a signed statement of the log's size and root at a time, in
// the C2SP tlog-checkpoint format. The log signs it; witnesses cosign it
// once they have checked it is consistent with what they saw before.
type Checkpoint struct {
	Origin string    // the log's name, also the name of its signing key
	Size   uint64    // number of leaves
	Root   [32]byte  // RFC 6962 root of the first Size leaves
	Time   time.Time // when the log signed it
}

// timeExt is the one extension line a checkpoint body carries.
const timeExt = "time "

// Body returns the checkpoint's note text:
//
//	<origin>
//	<size>
//	<base64 root>
//	time <RFC 3339 time, UTC, nanoseconds>
func (c Checkpoint) Body() string {
	var b strings.Builder
	b.WriteString(c.Origin)
	b.WriteByte('\n')
	b.WriteString(strconv.FormatUint(c.Size, 10))
	b.WriteByte('\n')
	b.WriteString(base64.StdEncoding.EncodeToString(c.Root[:]))
	b.WriteByte('\n')
	b.WriteString(timeExt)
	b.WriteString(c.Time.UTC().Format(time.RFC3339Nano))
	b.WriteByte('\n')
	return b.String()
}

// ParseCheckpoint parses a checkpoint body as [Checkpoint.Body] writes it.
// It is strict: anything Body would not have written is an error, so a
// checkpoint has exactly one text.
func ParseCheckpoint(body string) (Checkpoint, error) {
	var c Checkpoint
	if !strings.HasSuffix(body, "\n") {
		return c, errors.New("parse checkpoint: body does not end in a newline")
	}
	lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
	if len(lines) != 4 {
		return c, fmt.Errorf("parse checkpoint: got %d lines, want 4 (origin, size, root, time)", len(lines))
	}
	c.Origin = lines[0]
	if c.Origin == "" {
		return c, errors.New("parse checkpoint: empty origin")
	}
	size, err := strconv.ParseUint(lines[1], 10, 64)
	if err != nil || strconv.FormatUint(size, 10) != lines[1] {
		return c, fmt.Errorf("parse checkpoint: size %q is not a decimal number", lines[1])
	}
	c.Size = size
	root, err := base64.StdEncoding.Strict().DecodeString(lines[2])
	if err != nil || len(root) != len(c.Root) {
		return c, fmt.Errorf("parse checkpoint: root %q is not a base64 SHA-256 hash", lines[2])
	}
	c.Root = [32]byte(root)
	ts, ok := strings.CutPrefix(lines[3], timeExt)
	if !ok {
		return c, fmt.Errorf("parse checkpoint: line 4 is %q, want %q and a time", lines[3], timeExt)
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil || t.Location() != time.UTC || t.Format(time.RFC3339Nano) != ts {
		return c, fmt.Errorf("parse checkpoint: time %q is not an RFC 3339 UTC time", ts)
	}
	c.Time = t
	return c, nil
}

// algEd25519 is the note signature algorithm byte for Ed25519.
const algEd25519 = 1

// NewSigner returns a note signer for the Ed25519 key, named name. Its key
// hash is the one note computes, so the verifier made from
// [VerifierKey](name, key.Public()) checks its signatures.
func NewSigner(name string, key ed25519.PrivateKey) (note.Signer, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("new signer %q: private key is %d bytes, want %d", name, len(key), ed25519.PrivateKeySize)
	}
	pub := append([]byte{algEd25519}, key.Public().(ed25519.PublicKey)...)
	priv := append([]byte{algEd25519}, key.Seed()...)
	// The encoding note.GenerateKey writes; note.NewSigner checks the name
	// and that the hash matches the key.
	skey := fmt.Sprintf("PRIVATE+KEY+%s+%08x+%s", name, keyHash(name, pub), base64.StdEncoding.EncodeToString(priv))
	s, err := note.NewSigner(skey)
	if err != nil {
		return nil, fmt.Errorf("new signer %q: %w", name, err)
	}
	return s, nil
}

// keyHash is note's key hash: the first four bytes of
// SHA-256(name || "\n" || algorithm byte || public key).
func keyHash(name string, pub []byte) uint32 {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte("\n"))
	h.Write(pub)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

// VerifierKey returns the note verifier key for an Ed25519 public key, as
// "<name>+<hash>+<base64 key>": the text a customer is given to check the
// log's (or a witness's) signatures.
func VerifierKey(name string, pub ed25519.PublicKey) (string, error) {
	vkey, err := note.NewEd25519VerifierKey(name, pub)
	if err != nil {
		return "", fmt.Errorf("verifier key %q: %w", name, err)
	}
	// NewEd25519VerifierKey does not check the name; NewVerifier does.
	if _, err := note.NewVerifier(vkey); err != nil {
		return "", fmt.Errorf("verifier key %q: %w", name, err)
	}
	return vkey, nil
}

// NewVerifier returns the note verifier for a verifier key as
// [VerifierKey] writes it.
func NewVerifier(vkey string) (note.Verifier, error) {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("parse verifier key: %w", err)
	}
	return v, nil
}

// SignCheckpoint returns c as a note signed by the log's signer, whose name
// must be c's origin.
func SignCheckpoint(c Checkpoint, s note.Signer) (string, error) {
	if s.Name() != c.Origin {
		return "", fmt.Errorf("sign checkpoint: signer %q is not the checkpoint's origin %q", s.Name(), c.Origin)
	}
	body := c.Body()
	if _, err := ParseCheckpoint(body); err != nil {
		return "", fmt.Errorf("sign checkpoint: %w", err)
	}
	msg, err := note.Sign(&note.Note{Text: body}, s)
	if err != nil {
		return "", fmt.Errorf("sign checkpoint: %w", err)
	}
	return string(msg), nil
}

// OpenCheckpoint checks that noteText carries a valid signature by the log
// and returns the checkpoint it states. The checkpoint's origin must be the
// log key's name. Signatures by other keys are ignored.
func OpenCheckpoint(noteText string, log note.Verifier) (Checkpoint, error) {
	n, err := openNote(noteText, log)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("open checkpoint: %w", err)
	}
	c, err := checkpointFrom(n, log)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("open checkpoint: %w", err)
	}
	return c, nil
}

// openNote opens noteText with the given verifiers.
func openNote(noteText string, verifiers ...note.Verifier) (*note.Note, error) {
	if len(verifiers) == 0 || verifiers[0] == nil {
		return nil, errors.New("no log verifier")
	}
	n, err := note.Open([]byte(noteText), note.VerifierList(verifiers...))
	if err != nil {
		if _, ok := errors.AsType[*note.UnverifiedNoteError](err); ok {
			return nil, fmt.Errorf("not signed by %s+%08x: %w", verifiers[0].Name(), verifiers[0].KeyHash(), err)
		}
		return nil, err
	}
	return n, nil
}

// checkpointFrom returns the checkpoint in n, which note.Open verified,
// after checking that the log's signature is among the verified ones and
// that the log is the checkpoint's origin.
func checkpointFrom(n *note.Note, log note.Verifier) (Checkpoint, error) {
	if !signedBy(n, log) {
		return Checkpoint{}, fmt.Errorf("not signed by %s+%08x", log.Name(), log.KeyHash())
	}
	c, err := ParseCheckpoint(n.Text)
	if err != nil {
		return Checkpoint{}, err
	}
	if c.Origin != log.Name() {
		return Checkpoint{}, fmt.Errorf("origin %q is not the log key's name %q", c.Origin, log.Name())
	}
	return c, nil
}

// signedBy reports whether n carries a verified signature by v.
func signedBy(n *note.Note, v note.Verifier) bool {
	for _, s := range n.Sigs {
		if s.Name == v.Name() && s.Hash == v.KeyHash() {
			return true
		}
	}
	return false
}

// Cosign checks that noteText is a checkpoint signed by the log and returns
// it with the witness's signature added after the signatures it carries.
// A witness should cosign only once it has checked the checkpoint is
// consistent with the last one it cosigned; that check needs a consistency
// proof and is the caller's.
func Cosign(noteText string, log note.Verifier, witness note.Signer) (string, error) {
	n, err := openNote(noteText, log)
	if err != nil {
		return "", fmt.Errorf("cosign checkpoint: %w", err)
	}
	if _, err := checkpointFrom(n, log); err != nil {
		return "", fmt.Errorf("cosign checkpoint: %w", err)
	}
	if witness.Name() == log.Name() && witness.KeyHash() == log.KeyHash() {
		return "", errors.New("cosign checkpoint: the witness key is the log's key")
	}
	msg, err := note.Sign(n, witness)
	if err != nil {
		return "", fmt.Errorf("cosign checkpoint: %w", err)
	}
	return string(msg), nil
}

// WitnessedBy checks that noteText is a checkpoint signed by the log and
// returns it with the names of the witnesses, among those given, whose valid
// signature it carries, in the order they appear. Signatures by unknown keys
// are ignored; an invalid signature by a known key is an error.
func WitnessedBy(noteText string, log note.Verifier, witnesses []note.Verifier) (Checkpoint, []string, error) {
	c, names, _, err := openWitnessed(noteText, log, witnesses)
	return c, names, err
}

// openWitnessed is [WitnessedBy], also returning the opened note.
func openWitnessed(noteText string, log note.Verifier, witnesses []note.Verifier) (Checkpoint, []string, *note.Note, error) {
	if slices.Contains(witnesses, nil) {
		return Checkpoint{}, nil, nil, errors.New("open cosigned checkpoint: nil witness verifier")
	}
	vs := append([]note.Verifier{log}, witnesses...)
	n, err := openNote(noteText, vs...)
	if err != nil {
		return Checkpoint{}, nil, nil, fmt.Errorf("open cosigned checkpoint: %w", err)
	}
	c, err := checkpointFrom(n, log)
	if err != nil {
		return Checkpoint{}, nil, nil, fmt.Errorf("open cosigned checkpoint: %w", err)
	}
	var names []string
	for _, s := range n.Sigs {
		if s.Name == log.Name() && s.Hash == log.KeyHash() {
			continue
		}
		names = append(names, s.Name)
	}
	return c, names, n, nil
}

// noteBody returns the text of a signed note, before the blank line that
// separates it from its signatures, without checking any signature.
func noteBody(msg string) (string, bool) {
	i := strings.LastIndex(msg, "\n\n")
	if i < 0 {
		return "", false
	}
	return msg[:i+1], true
}
