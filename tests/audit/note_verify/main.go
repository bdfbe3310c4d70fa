// Command note-verify is the independent signed-note implementation the
// checkpoint tests check enforcer/audit/checkpoint.py against: Go's reference
// golang.org/x/mod/sumdb/note (Debian's golang-golang-x-mod-dev), built by
// scripts/build-note-verifier.sh in GOPATH mode.
//
//	note-verify verify VKEY NOTEFILE   note.Open with that one verifier key;
//	                                   prints the note text, exit 1 on any error
//	note-verify sign NAME TEXTFILE     note.GenerateKey + note.Sign; prints the
//	                                   verifier key on one line, then the note
//	note-verify sign-key SKEY TEXTFILE note.Sign with the given
//	                                   PRIVATE+KEY+... signer key; prints the note
//	note-verify selftest               opens the package's documented example
package main

import (
	"crypto/rand"
	"fmt"
	"os"

	"golang.org/x/mod/sumdb/note"
)

const usage = `usage:
  note-verify verify VKEY NOTEFILE
  note-verify sign NAME TEXTFILE
  note-verify sign-key SKEY TEXTFILE
  note-verify selftest
`

// The example from the package documentation (and its tests).
const (
	exampleKey  = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
	exampleNote = "If you think cryptography is the answer to your problem,\n" +
		"then you don't know what your problem is.\n" +
		"\n" +
		"— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "note-verify: "+format+"\n", args...)
	os.Exit(1)
}

func open(vkey string, msg []byte) *note.Note {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		fail("verifier key: %v", err)
	}
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		fail("open: %v", err)
	}
	return n
}

func sign(skey string, text []byte) []byte {
	s, err := note.NewSigner(skey)
	if err != nil {
		fail("signer key: %v", err)
	}
	msg, err := note.Sign(&note.Note{Text: string(text)}, s)
	if err != nil {
		fail("sign: %v", err)
	}
	return msg
}

func read(path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		fail("%v", err)
	}
	return b
}

func main() {
	args := os.Args[1:]
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	switch {
	case args[0] == "-h" || args[0] == "--help" || args[0] == "help":
		fmt.Print(usage)
	case args[0] == "verify" && len(args) == 3:
		os.Stdout.WriteString(open(args[1], read(args[2])).Text)
	case args[0] == "sign" && len(args) == 3:
		skey, vkey, err := note.GenerateKey(rand.Reader, args[1])
		if err != nil {
			fail("generate key: %v", err)
		}
		msg := sign(skey, read(args[2]))
		fmt.Println(vkey)
		os.Stdout.Write(msg)
	case args[0] == "sign-key" && len(args) == 3:
		os.Stdout.Write(sign(args[1], read(args[2])))
	case args[0] == "selftest" && len(args) == 1:
		n := open(exampleKey, []byte(exampleNote))
		if len(n.Sigs) != 1 || n.Sigs[0].Name != "PeterNeumann" || n.Sigs[0].Hash != 0xc74f20a3 {
			fail("selftest: unexpected signatures %v", n.Sigs)
		}
		fmt.Println("ok")
	default:
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
}
