package sealing_test

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/cmlcloud/cml-cloud-manager/infrastructure/sealing"
)

func TestSealOpenRoundTrip(t *testing.T) {
	t.Parallel()
	s, err := sealing.New(sealing.RandomKey())
	if err != nil {
		t.Fatal(err)
	}
	token := "NzQ5ZjE0NjQtZGI5MS00NDVjLWE5NGQtYzQ0MzliZjE2YzJk"
	sealed, err := s.Seal(token)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(sealed, token) {
		t.Fatalf("sealed value %q contains the token", sealed)
	}
	again, _ := s.Seal(token)
	if again == sealed {
		t.Fatal("two seals of the same token are equal: nonce reused")
	}
	got, err := s.Open(sealed)
	if err != nil || got != token {
		t.Fatalf("Open = %q, %v; want the token", got, err)
	}
}

func TestOpenRefusesOtherKeyAndTampering(t *testing.T) {
	t.Parallel()
	a, _ := sealing.New(sealing.RandomKey())
	b, _ := sealing.New(sealing.RandomKey())
	sealed, _ := a.Seal("secret")
	if _, err := b.Open(sealed); !errors.Is(err, sealing.ErrOpen) {
		t.Fatalf("open with another key: err = %v, want ErrOpen", err)
	}
	tampered := sealed[:len(sealed)-2] + "AA"
	if tampered == sealed {
		tampered = sealed[:len(sealed)-2] + "BB"
	}
	if _, err := a.Open(tampered); !errors.Is(err, sealing.ErrOpen) {
		t.Fatalf("open tampered: err = %v, want ErrOpen", err)
	}
	for _, bad := range []string{"", "v1:", "v2:abc", "v1:!!!"} {
		if _, err := a.Open(bad); !errors.Is(err, sealing.ErrOpen) {
			t.Errorf("Open(%q): err = %v, want ErrOpen", bad, err)
		}
	}
}

func TestParseKey(t *testing.T) {
	t.Parallel()
	k := sealing.RandomKey()
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawURLEncoding} {
		got, err := sealing.ParseKey(enc.EncodeToString(k))
		if err != nil || string(got) != string(k) {
			t.Fatalf("ParseKey: %v", err)
		}
	}
	if _, err := sealing.ParseKey(base64.StdEncoding.EncodeToString(k[:16])); err == nil {
		t.Fatal("a 16-byte key was accepted")
	}
	if _, err := sealing.ParseKey("not base64 !"); err == nil {
		t.Fatal("garbage accepted")
	}
}

func TestFingerprintIsStableAndShort(t *testing.T) {
	t.Parallel()
	a, _ := sealing.New(sealing.RandomKey())
	b, _ := sealing.New(sealing.RandomKey())
	if a.Fingerprint("tok") != b.Fingerprint("tok") {
		t.Fatal("fingerprint depends on the key")
	}
	if a.Fingerprint("tok") == a.Fingerprint("tok2") {
		t.Fatal("different tokens share a fingerprint")
	}
	if fp := a.Fingerprint("tok"); !strings.HasPrefix(fp, "sha256:") || len(fp) != len("sha256:")+12 {
		t.Fatalf("fingerprint %q", fp)
	}
}
