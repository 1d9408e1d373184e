package deploy

import (
	"regexp"
	"slices"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, …
	args string
}

// stage is one build stage: from FROM to the next.
type stage struct {
	from  string // the base image
	name  string // AS name
	instr []instruction
}

func parseDockerfile(t *testing.T, path string) []stage {
	t.Helper()
	var stages []stage
	var line string
	for _, raw := range strings.Split(string(readFile(t, path)), "\n") {
		s := strings.TrimSpace(raw)
		if strings.HasPrefix(s, "#") || (s == "" && line == "") {
			continue
		}
		if strings.HasSuffix(s, "\\") {
			line += strings.TrimSuffix(s, "\\") + " "
			continue
		}
		line += s
		cmd, args, _ := strings.Cut(line, " ")
		line = ""
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			st := stage{from: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) > 0 {
			stages[len(stages)-1].instr = append(stages[len(stages)-1].instr, in)
		}
	}
	return stages
}

func (s stage) all(cmd string) []string {
	var out []string
	for _, in := range s.instr {
		if in.cmd == cmd {
			out = append(out, in.args)
		}
	}
	return out
}

// TestDockerfiles: each image is built in a pinned Go builder stage as a
// static binary (CGO_ENABLED=0, -trimpath, the agent without the PeerAPI
// server), and runs in a final stage that is scratch or distroless
// static — no shell — as a non-root user, executing nothing at build time
// and holding only the binary. The agent's entrypoint is the path the
// chart's probes run.
func TestDockerfiles(t *testing.T) {
	goVersion := regexp.MustCompile(`^golang:(\$\{GO_VERSION\}|1\.\d+\.\d+)`)
	for _, tt := range []struct {
		file, binary string
		tags         []string
	}{
		{"docker/agent.Dockerfile", "/agent", []string{"ts_omit_peerapiserver"}},
		{"docker/broker.Dockerfile", "/broker", []string{"ts_omit_peerapiserver"}},
	} {
		t.Run(tt.file, func(t *testing.T) {
			stages := parseDockerfile(t, tt.file)
			if len(stages) < 2 {
				t.Fatalf("%d stages, want a builder and a final stage", len(stages))
			}
			build, final := stages[0], stages[len(stages)-1]
			if !goVersion.MatchString(build.from) {
				t.Errorf("builder FROM %s, want golang at a pinned version", build.from)
			}
			if strings.Contains(string(readFile(t, tt.file)), "ARG GO_VERSION=") && !regexp.MustCompile(`ARG GO_VERSION=1\.\d+\.\d+\b`).Match(readFile(t, tt.file)) {
				t.Errorf("GO_VERSION is not pinned to a release such as 1.26.8")
			}
			var built bool
			for _, run := range build.all("RUN") {
				if !strings.Contains(run, "go build") {
					continue
				}
				built = true
				if !strings.Contains(run, "CGO_ENABLED=0") && !slices.ContainsFunc(build.all("ENV"), func(e string) bool { return strings.Contains(e, "CGO_ENABLED=0") }) {
					t.Errorf("go build without CGO_ENABLED=0: the binary would need libc, which the final image lacks")
				}
				if !strings.Contains(run, "-trimpath") {
					t.Errorf("go build without -trimpath")
				}
				m := regexp.MustCompile(`-tags[ =](\S+)`).FindStringSubmatch(run)
				for _, tag := range tt.tags {
					if m == nil || !slices.Contains(strings.Split(m[1], ","), tag) {
						t.Errorf("go build without -tags %s: %s", tag, run)
					}
				}
			}
			if !built {
				t.Errorf("the builder stage runs no go build")
			}
			if final.from != "scratch" && !strings.HasPrefix(final.from, "gcr.io/distroless/static") {
				t.Errorf("final stage FROM %s, want scratch or distroless static: no shell in the image", final.from)
			}
			users := final.all("USER")
			if len(users) == 0 {
				t.Errorf("the final stage sets no USER: it would run as root")
			}
			for _, u := range users {
				name, _, _ := strings.Cut(u, ":")
				if name == "" || name == "root" || name == "0" {
					t.Errorf("USER %s is root", u)
				}
			}
			if !strings.HasSuffix(final.from, ":nonroot") && len(users) == 0 {
				t.Errorf("no non-root user")
			}
			for _, in := range final.instr {
				switch in.cmd {
				case "COPY":
					if !strings.HasPrefix(in.args, "--from=") {
						t.Errorf("final stage COPY %s: copy only the built binary from the builder", in.args)
					}
				case "RUN", "ADD", "SHELL":
					t.Errorf("final stage %s %s: the final image runs nothing at build time and has no shell", in.cmd, in.args)
				}
			}
			ep := final.all("ENTRYPOINT")
			if len(ep) != 1 || ep[0] != `["`+tt.binary+`"]` {
				t.Errorf("ENTRYPOINT %v, want [%q] (exec form: no shell)", ep, tt.binary)
			}
		})
	}
}
