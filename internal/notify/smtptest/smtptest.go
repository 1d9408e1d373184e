// Package smtptest runs an SMTP server on loopback for tests: the real
// protocol, recording what it is sent. It is never linked into binaries.
package smtptest

import (
	"bufio"
	"net"
	"strings"
	"sync"
	"testing"
)

// Server is an SMTP server on loopback speaking the real protocol
// (EHLO, MAIL, RCPT, DATA with dot-stuffing, QUIT), recording what it is
// sent; its first MAIL commands can be refused with a temporary error.
type Server struct {
	ln        net.Listener
	mu        sync.Mutex
	mails     []Mail
	tempFails int // MAIL commands to refuse with 451 first
}

type Mail struct {
	From string   // the MAIL FROM argument
	To   []string // the RCPT TO addresses
	Data string   // the message, headers and body, dot-stuffing undone
}

func Start(t testing.TB, tempFails int) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{ln: ln, tempFails: tempFails}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s
}

func (s *Server) serve(c net.Conn) {
	defer c.Close()
	r, w := bufio.NewReader(c), bufio.NewWriter(c)
	say := func(line string) { w.WriteString(line + "\r\n"); w.Flush() }
	say("220 test.local ESMTP")
	var m Mail
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(cmd, "EHLO"), strings.HasPrefix(cmd, "HELO"):
			say("250-test.local")
			say("250 8BITMIME")
		case strings.HasPrefix(cmd, "MAIL FROM:"):
			s.mu.Lock()
			fail := s.tempFails > 0
			if fail {
				s.tempFails--
			}
			s.mu.Unlock()
			if fail {
				say("451 4.3.0 try again later")
				continue
			}
			m = Mail{From: strings.TrimSpace(line[len("MAIL FROM:"):])}
			say("250 ok")
		case strings.HasPrefix(cmd, "RCPT TO:"):
			m.To = append(m.To, strings.Trim(strings.TrimSpace(line[len("RCPT TO:"):]), "<>"))
			say("250 ok")
		case cmd == "DATA":
			say("354 go ahead")
			var data strings.Builder
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				data.WriteString(strings.TrimPrefix(l, "."))
			}
			m.Data = data.String()
			s.mu.Lock()
			s.mails = append(s.mails, m)
			s.mu.Unlock()
			say("250 queued")
		case cmd == "QUIT":
			say("221 bye")
			return
		default:
			say("502 unknown")
		}
	}
}

func (s *Server) Mails() []Mail {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Mail(nil), s.mails...)
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return s.ln.Addr().String() }
