package store

import "testing"

// protocols= as Postfix 3.6+ reads it (tls_proto_mask_lims) and OpenSSL
// applies it (the lowest contiguous run of enabled versions).
func TestProtocolRange(t *testing.T) {
	const v10, v11, v12, v13 = 0x0301, 0x0302, 0x0303, 0x0304
	tests := []struct {
		spec   string
		lo, hi uint16
	}{
		{">=TLSv1.2", v12, v13},
		{"<=TLSv1.2", v10, v12},
		{">=TLSv1.1:<=TLSv1.2", v11, v12},
		{">=0x0303", v12, v13},
		{">=303", v12, v13},
		{">=None", v10, v13},
		{"!SSLv2:!SSLv3:!TLSv1:!TLSv1.1", v12, v13},
		{"!SSLv2,!SSLv3,!TLSv1", v11, v13}, // main.cf form
		{"!TLSv1:!TLSv1.1", v12, v13},
		{"TLSv1.2:TLSv1.3", v12, v13}, // include list: the rest excluded
		{"TLSv1.3", v13, v13},
		{"tlsv1.2:TLSV1.3", v12, v13},
		{"!TLSv1.1", v10, v10}, // a gap: OpenSSL offers TLSv1 only
		{"!TLSv1.2", v10, v11},
		{"", v10, v13},
		{">=TLSv1.3:<=TLSv1.2", 0, 0},
		{"SSLv3", 0, 0},
		{"!TLSv1:!TLSv1.1:!TLSv1.2:!TLSv1.3", 0, 0},
	}
	for _, tc := range tests {
		lo, hi, err := ProtocolRange(tc.spec)
		if err != nil || lo != tc.lo || hi != tc.hi {
			t.Errorf("ProtocolRange(%q) = %#x, %#x, %v; want %#x, %#x", tc.spec, lo, hi, err, tc.lo, tc.hi)
		}
	}
	for _, bad := range []string{"TLSv2", ">=TLSv9", "!foo"} {
		if _, _, err := ProtocolRange(bad); err == nil {
			t.Errorf("ProtocolRange(%q): no error", bad)
		}
	}
}
