// Package progress defines the one progress report shape of every long
// operation (full backup, incremental, stream, restore, replay, verify):
// a phase, how much of how much in which unit, the object being worked on
// and a message. Callers pass a Func; engine packages call it (a nil Func
// ignores reports) from the operation's goroutine, never concurrently for
// one operation unless they say so.
package progress

// Unit says what Done and Total count.
type Unit string

// Units.
const (
	Bytes        Unit = "bytes"
	Transactions Unit = "transactions"
	Archives     Unit = "archives"
	Databases    Unit = "databases"
	Members      Unit = "members"
	Steps        Unit = "steps"
)

// Event is one progress report. Total 0 means unknown; Done may exceed an
// estimated Total. Phase names are stable words ("dump", "archive",
// "verify", "extract", "restore", "replay", "seal", "capture", "done").
type Event struct {
	Phase   string `json:"phase"`
	Object  string `json:"object,omitempty"` // database, archive or member being worked on
	Done    int64  `json:"done"`
	Total   int64  `json:"total"`
	Unit    Unit   `json:"unit,omitempty"`
	Message string `json:"message,omitempty"`
}

// Fraction returns Done/Total clamped to [0,1], and false when Total is unknown.
func (e Event) Fraction() (float64, bool) {
	if e.Total <= 0 {
		return 0, false
	}
	f := float64(e.Done) / float64(e.Total)
	if f > 1 {
		f = 1
	}
	if f < 0 {
		f = 0
	}
	return f, true
}

// Func receives progress events.
type Func func(Event)

// Report calls f with e; a nil f ignores it.
func (f Func) Report(e Event) {
	if f != nil {
		f(e)
	}
}

// Phase reports a phase change with a message and no counts.
func (f Func) Phase(phase, object, msg string) {
	f.Report(Event{Phase: phase, Object: object, Message: msg})
}
