package apply

import "testing"

func TestQualified(t *testing.T) {
	for name, want := range map[string]bool{
		"integer": false, "character varying(20)": false, "numeric(10,2)": false, "text[]": false,
		"public.mood": true, `"Sales Ω".mood`: true, `"a.b"`: false, `"a.b".c[]`: true, "other.mood[]": true,
		`"we""ird.x"`: false,
	} {
		if got := qualified(name); got != want {
			t.Errorf("qualified(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestTextArray(t *testing.T) {
	got := string(textArray([][]byte{[]byte(`a"b\c`), nil, {}, []byte("NULL"), []byte("x,y{}")}))
	want := `{"a\"b\\c",NULL,"","NULL","x,y{}"}`
	if got != want {
		t.Fatalf("textArray = %s, want %s", got, want)
	}
}
