package chain

import (
	"reflect"
	"testing"
)

// print builds a version-2 print from entries key -> (hash, parts, deps).
func testPrint(entries map[string]testEntry) *CatalogPrint {
	cp := &CatalogPrint{Version: CatalogVersion, Objects: map[string]string{}, Bare: map[string]string{},
		Parts: map[string][]uint32{}, Deps: map[string][]uint32{}}
	for k, e := range entries {
		cp.Objects[k] = e.hash
		if e.bare != "" {
			cp.Bare[k] = e.bare
		}
		cp.Parts[k] = uniqueOIDs(e.parts)
		cp.Deps[k] = uniqueOIDs(e.deps)
	}
	cp.Hash = hashObjects(cp.Objects)
	return cp
}

type testEntry struct {
	hash, bare  string
	parts, deps []uint32
}

func TestUnexplained(t *testing.T) {
	old := testPrint(map[string]testEntry{
		"schema s1":          {hash: "s", parts: []uint32{10}},
		"schema public":      {hash: "p", parts: []uint32{11}},
		"relation public.t":  {hash: "t1", bare: "t1b", parts: []uint32{100, 101}, deps: []uint32{11}},
		"relation public.v":  {hash: "v1", parts: []uint32{200, 201}, deps: []uint32{100, 11}},
		"relation public.u":  {hash: "u1", parts: []uint32{300}, deps: []uint32{400, 11}},
		"type s1.mood":       {hash: "m1", parts: []uint32{400}, deps: []uint32{10}},
		"relation public.p1": {hash: "p1", parts: []uint32{500}, deps: []uint32{600, 11}},
		"relation public.pp": {hash: "pp", parts: []uint32{600}, deps: []uint32{11}},
	})
	touched := func(oids ...uint32) Explains {
		return Explains{Touched: func(o uint32) bool {
			for _, x := range oids {
				if x == o {
					return true
				}
			}
			return false
		}, Privileges: func(string) bool { return false }}
	}
	mod := func(f func(m map[string]testEntry)) *CatalogPrint {
		m := map[string]testEntry{}
		for k, v := range old.Objects {
			m[k] = testEntry{hash: v, bare: old.Bare[k], parts: old.Parts[k], deps: old.Deps[k]}
		}
		f(m)
		return testPrint(m)
	}
	for _, tc := range []struct {
		name string
		now  *CatalogPrint
		ex   Explains
		want []string
	}{
		{"hidden change beside other DDL", mod(func(m map[string]testEntry) {
			e := m["relation public.t"]
			e.hash = "t2"
			m["relation public.t"] = e
			m["relation public.n"] = testEntry{hash: "n", parts: []uint32{700}}
		}), touched(700), []string{"relation public.t changed"}},
		{"change of the touched table, shown in its view", mod(func(m map[string]testEntry) {
			e := m["relation public.t"]
			e.hash = "t2"
			m["relation public.t"] = e
			v := m["relation public.v"]
			v.hash = "v2"
			m["relation public.v"] = v
		}), touched(100), nil},
		{"view changed alone: its table untouched", mod(func(m map[string]testEntry) {
			v := m["relation public.v"]
			v.hash = "v2"
			m["relation public.v"] = v
		}), touched(700), []string{"relation public.v changed"}},
		{"schema renamed: the type and the column of that type", mod(func(m map[string]testEntry) {
			delete(m, "schema s1")
			m["schema s2"] = testEntry{hash: "s", parts: []uint32{10}}
			delete(m, "type s1.mood")
			m["type s2.mood"] = testEntry{hash: "m1", parts: []uint32{400}, deps: []uint32{10}}
			u := m["relation public.u"]
			u.hash = "u2"
			m["relation public.u"] = u
		}), touched(10), nil},
		{"schema comment does not explain its tables", mod(func(m map[string]testEntry) {
			s := m["schema public"]
			s.hash = "p2"
			m["schema public"] = s
			e := m["relation public.t"]
			e.hash = "t2"
			m["relation public.t"] = e
		}), touched(11), []string{"relation public.t changed"}},
		{"privileges only, with a captured GRANT", mod(func(m map[string]testEntry) {
			e := m["relation public.t"]
			e.hash = "t2"
			m["relation public.t"] = e
		}), Explains{Touched: func(uint32) bool { return false }, Privileges: func(k string) bool { return k == "relation" }}, nil},
		{"more than privileges, with a captured GRANT", mod(func(m map[string]testEntry) {
			e := m["relation public.t"]
			e.hash, e.bare = "t2", "t2b"
			m["relation public.t"] = e
		}), Explains{Touched: func(uint32) bool { return false }, Privileges: func(k string) bool { return k == "relation" }}, []string{"relation public.t changed"}},
		{"partition detached: DDL names its parent", mod(func(m map[string]testEntry) {
			e := m["relation public.p1"]
			e.hash, e.deps = "p2", []uint32{11}
			m["relation public.p1"] = e
		}), touched(600), nil},
		{"dropped table", mod(func(m map[string]testEntry) {
			delete(m, "relation public.t")
			v := m["relation public.v"]
			delete(m, "relation public.v")
			_ = v
		}), touched(100, 200), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := old.Unexplained(tc.now, tc.ex, 6)
			if len(got) == 0 {
				got = nil
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Unexplained = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestComparableWithOlderPrint(t *testing.T) {
	old := &CatalogPrint{Objects: map[string]string{"relation public.t": "a"}}
	old.Hash = hashObjects(old.Objects)
	now := testPrint(map[string]testEntry{"relation public.t": {hash: "a"}, "statistics public.s": {hash: "b"}})
	if !old.Same(now) {
		t.Fatal("a version-1 print differs from a newer one only in kinds it did not have")
	}
	now.Objects["relation public.t"] = "c"
	if d := old.Diff(now, 6); !reflect.DeepEqual(d, []string{"relation public.t changed"}) {
		t.Fatalf("Diff = %q", d)
	}
}
