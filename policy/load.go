package policy

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
)

// defaultPolicy holds the default policy and its tests.
//
//go:embed *.rego
var defaultPolicy embed.FS

// maxPolicyBytes bounds what a policy directory may hold, so that a
// mistaken --policy-dir (a home directory, say) fails fast.
const maxPolicyBytes = 8 << 20

// deniedBuiltins reach outside the broker or are not deterministic.
var deniedBuiltins = []string{"http.send", "net.lookup_ip_addr", "opa.runtime", "rand.intn"}

// file is one .rego file of a policy.
type file struct {
	name string // slash-separated, relative to the policy's root
	src  []byte
}

// source is the content of a policy: its .rego files in name order.
type source struct {
	origin string // "embedded" or the directory
	files  []file
	hash   string // of the files that are not tests
}

// read reads the policy e evaluates.
func (e *Engine) read() (source, error) {
	if e.opts.Dir == "" {
		return readFS(defaultPolicy, "embedded", false)
	}
	return readDir(e.opts.Dir, false)
}

func readDir(dir string, tests bool) (source, error) {
	if _, err := os.Stat(dir); err != nil {
		return source{}, fmt.Errorf("read policy directory: %w", err)
	}
	return readFS(os.DirFS(dir), dir, tests)
}

// readFS reads the .rego files under fsys, with or without tests. It
// follows symbolic links to files (a Kubernetes ConfigMap volume is made
// of them) and skips files and directories whose names start with "."
// (where such a volume keeps its real files, where .git lives, and how
// editors and atomic writers name their temporary files).
func readFS(fsys fs.FS, origin string, tests bool) (source, error) {
	src := source{origin: origin}
	total := 0
	err := fs.WalkDir(fsys, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if name != "." && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		if !strings.HasSuffix(name, ".rego") || (!tests && isTest(name)) {
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			fi, err := fs.Stat(fsys, name)
			if err != nil {
				return err
			}
			if !fi.Mode().IsRegular() {
				return nil
			}
		} else if !d.Type().IsRegular() {
			return nil
		}
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return err
		}
		if total += len(b); total > maxPolicyBytes {
			return fmt.Errorf("%s: the policy holds more than %d bytes of .rego; point the policy directory at the policy alone", name, maxPolicyBytes)
		}
		src.files = append(src.files, file{name: name, src: b})
		return nil
	})
	if err != nil {
		return source{}, fmt.Errorf("read policy %s: %w", origin, err)
	}
	if len(src.files) == 0 {
		return source{}, fmt.Errorf("read policy %s: no .rego files: put the policy (package tether.access) there", origin)
	}
	slices.SortFunc(src.files, func(a, b file) int { return strings.Compare(a.name, b.name) })
	src.hash = hashFiles(src.files)
	return src, nil
}

func isTest(name string) bool { return strings.HasSuffix(name, "_test.rego") }

// hashFiles is the policy hash: the hex SHA-256 over, for each module that
// is not a test in name order, its name, a NUL, its length in decimal, a
// NUL and its content.
func hashFiles(files []file) string {
	h := sha256.New()
	for _, f := range files {
		if isTest(f.name) {
			continue
		}
		h.Write([]byte(f.name))
		h.Write([]byte{0})
		h.Write([]byte(strconv.Itoa(len(f.src))))
		h.Write([]byte{0})
		h.Write(f.src)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// parse parses the files of src as Rego v1, naming each module by origin
// and file so that errors read file:line.
func parse(src source) (map[string]*ast.Module, error) {
	mods := make(map[string]*ast.Module, len(src.files))
	var errs ast.Errors
	for _, f := range src.files {
		name := path.Join(src.origin, f.name)
		if src.origin == "embedded" {
			name = "policy/" + f.name
		}
		m, err := ast.ParseModuleWithOpts(name, string(f.src), ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			var aerrs ast.Errors
			if errors.As(err, &aerrs) {
				errs = append(errs, aerrs...)
				continue
			}
			return nil, fmt.Errorf("parse %s: %w", name, err)
		}
		mods[name] = m
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("parse policy: %w", errs)
	}
	return mods, nil
}

func capabilities() *ast.Capabilities {
	c := ast.CapabilitiesForThisVersion()
	c.Builtins = slices.DeleteFunc(slices.Clone(c.Builtins), func(b *ast.Builtin) bool {
		return slices.Contains(deniedBuiltins, b.Name)
	})
	return c
}

func newCompiler() *ast.Compiler {
	return ast.NewCompiler().
		WithCapabilities(capabilities()).
		WithDefaultRegoVersion(ast.RegoV1)
}

var queryRef = ast.MustParseRef(Query)

// prepare compiles src and prepares [Query] on it.
func prepare(ctx context.Context, src source) (*compiled, error) {
	mods, err := parse(src)
	if err != nil {
		return nil, err
	}
	c := newCompiler()
	if c.Compile(mods); c.Failed() {
		return nil, fmt.Errorf("compile policy: %w", c.Errors)
	}
	if len(c.GetRulesExact(queryRef)) == 0 {
		return nil, fmt.Errorf("compile policy %s: it defines no %s; the broker asks for that document (see policy/README.md)", src.origin, Query)
	}
	q, err := rego.New(rego.Query(Query), rego.Compiler(c)).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("prepare policy query %s: %w", Query, err)
	}
	return &compiled{query: q, hash: src.hash}, nil
}
