// Package events is the daemon's one source of the seed's notifications
// (backup_started, backup_completed, backup_failed): a broadcaster that
// hands each event to the D-Bus signals (synchronously, in order) and to
// the REST API's WebSocket and server-sent-event subscribers (through
// bounded queues: a subscriber that falls behind is dropped, never waited
// for, so that no job is ever blocked by a slow client).
package events

import (
	"errors"
	"sync"
	"time"
)

// Event types (the seed's "type" field).
const (
	BackupStarted   = "backup_started"
	BackupCompleted = "backup_completed"
	BackupFailed    = "backup_failed"
)

// Event is one notification, marshalled as the seed's JSON messages:
// camelCase keys, timestamp in RFC 3339 (UTC), duration in milliseconds
// (the seed's unit for this field), size in bytes. Fields that do not apply
// to a type are left out. No connection string, password or row data is
// ever put in an event.
type Event struct {
	Type       string    `json:"type"`
	BackupType string    `json:"backupType"` // "full", "incremental", or "drill" (a failed restore drill)
	Timestamp  time.Time `json:"timestamp"`
	BackupPath string    `json:"backupPath,omitempty"` // backup_completed: the archive written
	Duration   int64     `json:"duration,omitempty"`   // backup_completed: milliseconds
	Size       int64     `json:"size,omitempty"`       // backup_completed: bytes of the archive
	Error      string    `json:"error,omitempty"`      // backup_failed: what went wrong
	ErrorCode  string    `json:"errorCode,omitempty"`  // backup_failed: the code of CLI, D-Bus and REST errors
	Fix        string    `json:"fix,omitempty"`        // backup_failed: what to do about it
	JobID      uint64    `json:"jobId,omitempty"`      // the daemon's job (0: none)
	Databases  []string  `json:"databases,omitempty"`
}

// DefaultMaxSubscribers caps the queued subscribers (WebSocket and SSE
// clients) of a Broadcaster whose Max is 0.
const DefaultMaxSubscribers = 64

// ErrTooManySubscribers is returned by Subscribe when the cap is reached.
var ErrTooManySubscribers = errors.New("too many event subscribers")

// Broadcaster fans events out. The zero value is ready to use.
type Broadcaster struct {
	// Max caps the queued subscribers (DefaultMaxSubscribers when 0).
	Max int

	mu    sync.Mutex
	subs  map[*Subscription]struct{}
	hooks []func(Event)
}

// Subscription is one queued subscriber. C delivers the events in order;
// it is closed when the subscriber is dropped for being slow (Dropped then
// reports true) or unsubscribed.
type Subscription struct {
	C       <-chan Event
	c       chan Event
	b       *Broadcaster
	dropped bool
	closed  bool
}

// Hook adds a function called synchronously, in order, for every event
// (the D-Bus signals, metrics counters). It must not block.
func (b *Broadcaster) Hook(f func(Event)) {
	b.mu.Lock()
	b.hooks = append(b.hooks, f)
	b.mu.Unlock()
}

// Subscribe adds a subscriber with a queue of buffer events (16 when
// buffer <= 0). It fails with ErrTooManySubscribers when the cap is reached.
func (b *Broadcaster) Subscribe(buffer int) (*Subscription, error) {
	if buffer <= 0 {
		buffer = 16
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	limit := b.Max
	if limit <= 0 {
		limit = DefaultMaxSubscribers
	}
	if len(b.subs) >= limit {
		return nil, ErrTooManySubscribers
	}
	if b.subs == nil {
		b.subs = map[*Subscription]struct{}{}
	}
	c := make(chan Event, buffer)
	s := &Subscription{C: c, c: c, b: b}
	b.subs[s] = struct{}{}
	return s, nil
}

// Subscribers is the number of queued subscribers.
func (b *Broadcaster) Subscribers() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}

// Publish delivers ev: to every hook, then to every subscriber whose queue
// has room; a subscriber whose queue is full is dropped. It never blocks on
// a subscriber.
func (b *Broadcaster) Publish(ev Event) {
	if ev.Timestamp.IsZero() {
		ev.Timestamp = time.Now()
	}
	ev.Timestamp = ev.Timestamp.UTC()
	b.mu.Lock()
	hooks := append([]func(Event){}, b.hooks...)
	for s := range b.subs {
		select {
		case s.c <- ev:
		default:
			s.dropped = true
			b.remove(s)
		}
	}
	b.mu.Unlock()
	for _, h := range hooks {
		h(ev)
	}
}

// remove closes s's queue; b.mu is held.
func (b *Broadcaster) remove(s *Subscription) {
	if s.closed {
		return
	}
	s.closed = true
	delete(b.subs, s)
	close(s.c)
}

// Close unsubscribes s (safe to call more than once).
func (s *Subscription) Close() {
	s.b.mu.Lock()
	s.b.remove(s)
	s.b.mu.Unlock()
}

// Dropped reports whether s was dropped for falling behind.
func (s *Subscription) Dropped() bool {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	return s.dropped
}
