package lsn

import (
	"encoding/json"
	"testing"
)

func TestParseString(t *testing.T) {
	for _, c := range []struct {
		in   string
		want LSN
		out  string
	}{
		{"0/0", 0, "0/0"},
		{"0/16B3748", 0x16B3748, "0/16B3748"},
		{"16/b374d848", 0x16B374D848, "16/B374D848"},
		{" FFFFFFFF/FFFFFFFF ", ^LSN(0), "FFFFFFFF/FFFFFFFF"},
	} {
		got, err := Parse(c.in)
		if err != nil || got != c.want {
			t.Errorf("Parse(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
		if got.String() != c.out {
			t.Errorf("String(%q) = %q; want %q", c.in, got.String(), c.out)
		}
	}
	for _, bad := range []string{"", "/", "0/", "/0", "12", "G/0", "0/-1", "123456789/0", "0/0/0", "1,2"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

func TestJSON(t *testing.T) {
	type doc struct {
		At LSN `json:"at"`
	}
	b, err := json.Marshal(doc{At: 0x1_0000_00A0})
	if err != nil || string(b) != `{"at":"1/A0"}` {
		t.Fatalf("marshal: %s %v", b, err)
	}
	var d doc
	if err := json.Unmarshal(b, &d); err != nil || d.At != 0x1_0000_00A0 {
		t.Fatalf("unmarshal: %v %v", d.At, err)
	}
	if err := json.Unmarshal([]byte(`{"at":4294967456}`), &d); err != nil || d.At != 0x1_0000_00A0 {
		t.Fatalf("unmarshal number: %v %v", d.At, err)
	}
	if err := json.Unmarshal([]byte(`{"at":"nope"}`), &d); err == nil {
		t.Fatal("bad LSN accepted")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"0/0", "16/B374D848", "x/y", "FFFFFFFF/FFFFFFFF"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := Parse(s)
		if err != nil {
			return
		}
		back, err := Parse(l.String())
		if err != nil || back != l {
			t.Fatalf("%q -> %v -> %v, %v", s, l, back, err)
		}
	})
}
