package keys

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

// FuzzParse: any content parses or is refused, never panics, and a
// refusal never quotes a key-like run of the content.
func FuzzParse(f *testing.F) {
	f.Add([]byte("1 aes-gcm-128 000102030405060708090a0b0c0d0e0f\n"))
	f.Add([]byte("2 aes-gcm-256 " + strings.Repeat("ab", 32) + " sendAfter=2026-12-01T00:00:00Z\n# c\n"))
	f.Add([]byte("1 aes-gcm-128 zz\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := Parse(b)
		if err != nil {
			for _, field := range bytes.Fields(b) {
				// A run of 16 or more hex digits is key material.
				if _, herr := hex.DecodeString(string(field)); herr == nil && len(field) >= 16 && strings.Contains(err.Error(), string(field)) {
					t.Fatalf("the error quotes %q: %v", field, err)
				}
			}
			return
		}
		for _, k := range keys {
			if k.ID == 0 || len(k.Secret) != Algorithms[k.Algorithm] {
				t.Fatalf("accepted %+v", k)
			}
		}
	})
}
