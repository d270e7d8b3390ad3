package apply

import (
	"bytes"
	"testing"
)

// TestCopyEscapeRuns checks the COPY text escaping against a byte-by-byte
// reference, on the characters COPY treats specially and around them.
func TestCopyEscapeRuns(t *testing.T) {
	ref := func(b []byte) string {
		var out bytes.Buffer
		for _, c := range b {
			switch c {
			case '\\':
				out.WriteString(`\\`)
			case '\n':
				out.WriteString(`\n`)
			case '\r':
				out.WriteString(`\r`)
			case '\t':
				out.WriteString(`\t`)
			default:
				out.WriteByte(c)
			}
		}
		return out.String()
	}
	for _, in := range []string{"", "plain", `\`, "\\\\", "a\tb\nc\rd\\e", "\n", "end\t", "\tstart", `{"k": "\"q\""}`, "\x00\x01é€", "\\N"} {
		var buf bytes.Buffer
		buf.WriteString("x|")
		copyEscape(&buf, []byte(in))
		if got, want := buf.String(), "x|"+ref([]byte(in)); got != want {
			t.Errorf("copyEscape(%q) = %q, want %q", in, got, want)
		}
	}
}
