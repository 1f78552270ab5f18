package fault

import (
	"context"
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	rs, err := Parse(" tls_policy:e.example=error; check:p@x=panic;;tls_transport:h=hang ")
	if err != nil {
		t.Fatal(err)
	}
	want := Rules{{"tls_policy", "e.example", Error}, {"check", "p@x", Panic}, {"tls_transport", "h", Hang}}
	if len(rs) != len(want) {
		t.Fatalf("Parse = %+v, want %+v", rs, want)
	}
	for i := range want {
		if rs[i] != want[i] {
			t.Errorf("rule %d = %+v, want %+v", i, rs[i], want[i])
		}
	}
	for _, bad := range []string{"tls_policy:x", "x=error", ":x=error", "tls_policy:=error", "tls_policy:x=explode"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

func TestInject(t *testing.T) {
	rs := Rules{{"tls_policy", "e.example", Error}, {"check", "p@x", Panic}}
	ctx := context.Background()
	if err := rs.Inject(ctx, "tls_policy", "sub.e.example"); !errors.Is(err, ErrInjected) {
		t.Errorf("matching error rule: %v", err)
	}
	for _, miss := range [][2]string{{"tls_transport", "u@e.example"}, {"tls_policy", "other.example"}, {"check", "q@x"}} {
		if err := rs.Inject(ctx, miss[0], miss[1]); err != nil {
			t.Errorf("Inject(%q, %q) = %v, want nil", miss[0], miss[1], err)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("panic rule did not panic")
		}
	}()
	_ = rs.Inject(ctx, "check", "p@x")
}
