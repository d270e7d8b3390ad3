package restore

import (
	"strings"
	"testing"
)

// settingsScript is pg_restore --create -L … -f - (PostgreSQL 15) of the
// database-level entries of a database whose name needs quoting and whose
// comment holds a semicolon, a line starting with -- and its own name.
const settingsScript = `--
-- PostgreSQL database dump
--

\restrict X24ge4j6FgBE2R0H37lQ49Kg5qhBEWU5Qx0qRyzboAQxjXaLG5Z0TDSX5IU8ePl

-- Dumped from database version 15.18 (Debian 15.18-0+deb12u1)
-- Dumped by pg_dump version 15.18 (Debian 15.18-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: App-Db; Type: DATABASE; Schema: -; Owner: postgres
--

CREATE DATABASE "App-Db" WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = libc LOCALE = 'C.UTF-8';


ALTER DATABASE "App-Db" OWNER TO postgres;

\unrestrict X24ge4j6FgBE2R0H37lQ49Kg5qhBEWU5Qx0qRyzboAQxjXaLG5Z0TDSX5IU8ePl
\encoding SQL_ASCII
\connect -reuse-previous=on "dbname='App-Db'"
\restrict X24ge4j6FgBE2R0H37lQ49Kg5qhBEWU5Qx0qRyzboAQxjXaLG5Z0TDSX5IU8ePl

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: DATABASE "App-Db"; Type: COMMENT; Schema: -; Owner: postgres
--

COMMENT ON DATABASE "App-Db" IS 'the app''s db;
-- not a comment
DATABASE "App-Db"';


--
-- Name: App-Db; Type: DATABASE PROPERTIES; Schema: -; Owner: postgres
--

ALTER DATABASE "App-Db" CONNECTION LIMIT = 42;
ALTER DATABASE "App-Db" IS_TEMPLATE = true;
ALTER DATABASE "App-Db" SET work_mem TO '7MB';
ALTER DATABASE "App-Db" SET search_path TO 'public', '$user';
ALTER ROLE app_user IN DATABASE "App-Db" SET statement_timeout TO '5s';


\unrestrict X24ge4j6FgBE2R0H37lQ49Kg5qhBEWU5Qx0qRyzboAQxjXaLG5Z0TDSX5IU8ePl
\encoding SQL_ASCII
\connect -reuse-previous=on "dbname='App-Db'"
\restrict X24ge4j6FgBE2R0H37lQ49Kg5qhBEWU5Qx0qRyzboAQxjXaLG5Z0TDSX5IU8ePl

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: DATABASE "App-Db"; Type: ACL; Schema: -; Owner: postgres
--

REVOKE CONNECT,TEMPORARY ON DATABASE "App-Db" FROM PUBLIC;
GRANT TEMPORARY ON DATABASE "App-Db" TO PUBLIC;
GRANT CONNECT,TEMPORARY ON DATABASE "App-Db" TO app_user;


--
-- PostgreSQL database dump complete
--

\unrestrict X24ge4j6FgBE2R0H37lQ49Kg5qhBEWU5Qx0qRyzboAQxjXaLG5Z0TDSX5IU8ePl

`

const settingsListing = `;
; Archive created at 2026-11-29 18:59:02 UTC
;     dbname: App-Db
;     TOC Entries: 7
;     Compression: -1
;     Dump Version: 1.14-0
;     Format: DIRECTORY
;     Integer: 4 bytes
;     Offset: 8 bytes
;     Dumped from database version: 15.18 (Debian 15.18-0+deb12u1)
;     Dumped by pg_dump version: 15.18 (Debian 15.18-0+deb12u1)
;
;
; Selected TOC Entries:
;
3339; 1262 16415 DATABASE - App-Db postgres
3340; 0 0 COMMENT - DATABASE "App-Db" postgres
3341; 0 0 ACL - DATABASE "App-Db" postgres
3342; 0 0 DATABASE PROPERTIES - App-Db postgres
`

func TestSettingsTOC(t *testing.T) {
	name, list := settingsTOC(settingsListing, false)
	if name != "App-Db" || len(list) != 3 {
		t.Fatalf("name %q, entries %q", name, list)
	}
	if _, list := settingsTOC(settingsListing, true); len(list) != 2 {
		t.Fatalf("without ACL: %q", list)
	}
}

func TestSettingStatements(t *testing.T) {
	got := settingStatements(settingsScript)
	want := []string{
		"COMMENT ON DATABASE \"App-Db\" IS 'the app''s db;\n-- not a comment\nDATABASE \"App-Db\"'",
		`ALTER DATABASE "App-Db" CONNECTION LIMIT = 42`,
		`ALTER DATABASE "App-Db" IS_TEMPLATE = true`,
		`ALTER DATABASE "App-Db" SET work_mem TO '7MB'`,
		`ALTER DATABASE "App-Db" SET search_path TO 'public', '$user'`,
		`ALTER ROLE app_user IN DATABASE "App-Db" SET statement_timeout TO '5s'`,
		`REVOKE CONNECT,TEMPORARY ON DATABASE "App-Db" FROM PUBLIC`,
		`GRANT TEMPORARY ON DATABASE "App-Db" TO PUBLIC`,
		`GRANT CONNECT,TEMPORARY ON DATABASE "App-Db" TO app_user`,
	}
	if strings.Join(got, "\n;\n") != strings.Join(want, "\n;\n") {
		t.Fatalf("statements:\n%s\nwant:\n%s", strings.Join(got, "\n;\n"), strings.Join(want, "\n;\n"))
	}
	for _, s := range got {
		r, ok := renameInSetting(s, `"App-Db"`, `"copy of app"`)
		if !ok || strings.Count(r, `"copy of app"`) != 1 || strings.HasPrefix(s, "ALTER") && strings.Contains(r, "App-Db") {
			t.Errorf("rename in %q: %q %v", s, r, ok)
		}
	}
	if r, _ := renameInSetting(got[0], `"App-Db"`, `x`); r != "COMMENT ON DATABASE x IS 'the app''s db;\n-- not a comment\nDATABASE \"App-Db\"'" {
		t.Errorf("comment renamed inside its text: %q", r)
	}
	if _, ok := renameInSetting(`ALTER DATABASE "App-Dbx" SET a TO 'b'`, `"App-Db"`, `x`); ok {
		t.Error("a longer name matched")
	}
	if _, ok := renameInSetting(`ALTER DATABASE other SET a TO 'b'`, `"App-Db"`, `x`); ok {
		t.Error("another database's statement accepted")
	}
}
