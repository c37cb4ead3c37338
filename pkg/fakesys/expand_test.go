package fakesys

import "testing"

func TestExpandPattern(t *testing.T) {
	for _, tc := range []struct {
		p    string
		n    int
		want string
		ok   bool
	}{
		{"ibp24s0v{n}", 10, "ibp24s0v10", true},
		{"mlx5_{n+12}", 10, "mlx5_22", true},
		{"02:00:29:00:00:{n:02x}", 10, "02:00:29:00:00:0a", true},
		{"b83f:d203:00e1:18{n:02x}", 10, "b83f:d203:00e1:180a", true},
		{"x{n+1:04x}", 255, "x0100", true},
		{"", 3, "", true},
		{"{m}", 1, "", false},
		{"{n:q}", 1, "", false},
		{"{n", 1, "", false},
		{"n}", 1, "", false},
		{"{n+-1}", 1, "", false},
		{"{n+01}", 1, "", false},
	} {
		got, err := expandPattern(tc.p, tc.n)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("expandPattern(%q, %d) = %q, %v; want %q ok=%v", tc.p, tc.n, got, err, tc.want, tc.ok)
		}
	}
}
