package mtasts

import (
	"errors"
	"testing"
)

func TestParseTXT(t *testing.T) {
	for _, c := range []struct {
		in, id string
		ok     bool
	}{
		{"v=STSv1; id=20160831085700Z;", "20160831085700Z", true}, // RFC 8461 §3.1 example
		{"v=STSv1;id=abc", "abc", true},
		{"v=STSv1 ; id=abc ; ext=x.y", "abc", true},
		{"v=STSv1;\tid=A1\t;", "A1", true},
		{"v=STSv1; id=" + "a234567890123456789012345678901" + "2", "a2345678901234567890123456789012", true},
		{"v=STSv1; id=a2345678901234567890123456789012x", "", false}, // 33 characters
		{"v=STSv1;", "", false},
		{"v=STSv1; id=", "", false},
		{"v=STSv1; id=ab-c", "", false},
		{"v=STSv1; id=a; id=b", "", false},
		{"v=STSv2; id=a", "", false},
		{" v=STSv1; id=a", "", false},
		{"id=a; v=STSv1", "", false},
		{"v=STSv1; id=a; bad", "", false},
		{"v=STSv1; id=a; x=a b", "", false},
		{"v=STSv1; id=a;;", "", false},
	} {
		id, err := ParseTXT(c.in)
		if (err == nil) != c.ok || id != c.id {
			t.Errorf("ParseTXT(%q) = %q, %v; want %q ok=%v", c.in, id, err, c.id, c.ok)
		}
	}
}

func TestSelectTXT(t *testing.T) {
	if id, err := SelectTXT([]string{"v=spf1 -all", "v=STSv1; id=x1"}); err != nil || id != "x1" {
		t.Errorf("one STSv1 among others: %q, %v", id, err)
	}
	// RFC 8461 §3.1: more than one STSv1 record is as if none existed.
	if _, err := SelectTXT([]string{"v=STSv1; id=a", "v=STSv1; id=b"}); !errors.Is(err, ErrNoRecord) {
		t.Errorf("two records: %v", err)
	}
	if _, err := SelectTXT(nil); !errors.Is(err, ErrNoRecord) {
		t.Errorf("none: %v", err)
	}
	if _, err := SelectTXT([]string{"v=STSv1; id=a-b"}); !errors.Is(err, ErrNoRecord) {
		t.Errorf("invalid: %v", err)
	}
}
