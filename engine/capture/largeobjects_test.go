package capture

import "testing"

func TestLargeObjectDDL(t *testing.T) {
	for stmt, want := range map[string]bool{
		`ALTER LARGE OBJECT 1001 OWNER TO x`:                                         true,
		`alter  large object 1 owner to "a b"`:                                       true,
		`GRANT SELECT, UPDATE ON LARGE OBJECT 1003 TO "lo Reader" WITH GRANT OPTION`: true,
		`REVOKE ALL ON LARGE OBJECT 1 FROM PUBLIC`:                                   true,
		`COMMENT ON LARGE OBJECT 5 IS 'x'`:                                           true,
		`SECURITY LABEL FOR dummy ON LARGE OBJECT 5 IS 'x'`:                          true,
		`GRANT SELECT ON TABLE large TO object`:                                      false,
		`COMMENT ON TABLE t IS 'ON LARGE OBJECT'`:                                    false,
		`CREATE TABLE large (object int)`:                                            false,
		`ALTER TABLE t ADD COLUMN large int`:                                         false,
	} {
		if got := largeObjectDDL(stmt); got != want {
			t.Errorf("largeObjectDDL(%q) = %v, want %v", stmt, got, want)
		}
	}
}
