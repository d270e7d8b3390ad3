package restore

import (
	"strings"
	"testing"
)

// A listing of pg_restore -l (PostgreSQL 15) of a database holding our
// objects of both naming generations and the user's own.
const tocListing = `;
; Archive created at 2026-11-29 18:34:56 UTC
;     dbname: app
;
6; 2615 16395 SCHEMA - pme2go_abcd1234 postgres
3366; 0 0 COMMENT - SCHEMA pme2go_abcd1234 postgres
3367; 0 0 ACL - SCHEMA pme2go_abcd1234 postgres
217; 1255 16396 FUNCTION pme2go_abcd1234 capture() postgres
3371; 0 0 ACL pme2go_abcd1234 FUNCTION capture() postgres
218; 1255 16397 FUNCTION public pme2go_capture_ddl() postgres
3368; 0 0 COMMENT public FUNCTION pme2go_capture_ddl() postgres
219; 1255 16407 FUNCTION public user_evt() postgres
220; 1255 16408 FUNCTION public pme2go_capture_ddl_helper(integer) postgres
215; 1259 16385 TABLE public items postgres
216; 1259 16392 TABLE public nopk postgres
221; 1259 16393 TABLE my schema pme2go_like_table postgres
3358; 0 16385 TABLE DATA public items postgres
3208; 2606 16391 CONSTRAINT public items items_pkey postgres
3352; 6104 16401 PUBLICATION - pme2go_abcd1234_app_1 postgres
3351; 6104 16400 PUBLICATION - pme2go_app_x postgres
3369; 0 0 COMMENT - PUBLICATION pme2go_app_x postgres
3353; 6104 16403 PUBLICATION - user pub postgres
3354; 6104 16405 PUBLICATION - userpub2 postgres
3355; 6106 16402 PUBLICATION TABLE public pme2go_abcd1234_app_1 items postgres
3360; 6106 16409 PUBLICATION TABLE my schema pme2go_app_x items postgres
3356; 6106 16404 PUBLICATION TABLE public user pub items postgres
3361; 6106 16410 PUBLICATION TABLE public userpub2 pme2go_like_table postgres
3357; 6237 16406 PUBLICATION TABLES IN SCHEMA public userpub2 public postgres
3205; 3466 16399 EVENT TRIGGER - pme2go_abcd1234_ddl postgres
3204; 3466 16398 EVENT TRIGGER - pme2go_capture_ddl postgres
3370; 0 0 COMMENT - EVENT TRIGGER pme2go_capture_ddl postgres
3206; 3466 16408 EVENT TRIGGER - user_evt postgres
3372; 0 0 COMMENT - EVENT TRIGGER user_evt postgres
`

func TestFilterTOC(t *testing.T) {
	out, left := filterTOC(tocListing)
	ids := map[string]bool{}
	for _, l := range left {
		id, _, _ := strings.Cut(l, ";")
		ids[id] = true
	}
	want := []string{"6", "3366", "3367", "217", "3371", "218", "3368", "3352", "3351", "3369", "3355", "3360", "3205", "3204", "3370"}
	for _, id := range want {
		if !ids[id] {
			t.Errorf("entry %s not left out", id)
		}
	}
	if len(left) != len(want) {
		t.Errorf("left out %d entries, want %d:\n%s", len(left), len(want), strings.Join(left, "\n"))
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "; pme2go: ") {
			continue
		}
		for _, id := range want {
			if strings.HasPrefix(l, id+";") {
				t.Errorf("still listed: %s", l)
			}
		}
	}
	for _, keep := range []string{"219;", "220;", "221;", "3353;", "3354;", "3356;", "3361;", "3357;", "3206;", "3372;", "3358;"} {
		if !strings.Contains(out, "\n"+keep) {
			t.Errorf("user entry %s missing from the list", keep)
		}
	}
}

// TestSectionLeaders: grants and comments before the first other entry
// of a restore list move after it when it is of the pre-data section.
func TestSectionLeaders(t *testing.T) {
	in := []string{
		";",
		"; pme2go: 3213; 3466 16527 EVENT TRIGGER - pme2go_1234abcd_ddl postgres",
		"3373; 0 0 ACL - SCHEMA public pg_database_owner",
		"3374; 0 0 COMMENT - SCHEMA public pg_database_owner",
		"217; 1255 16494 FUNCTION public f(integer) postgres",
		"215; 1259 16496 TABLE public t postgres",
	}
	got := sectionLeaders(append([]string(nil), in...))
	want := []string{in[0], in[1], in[4], in[2], in[3], in[5]}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	data := []string{in[2], "3364; 0 16496 TABLE DATA public t postgres"}
	if got := sectionLeaders(append([]string(nil), data...)); strings.Join(got, "\n") != strings.Join(data, "\n") {
		t.Fatalf("moved before a data entry: %v", got)
	}
}
