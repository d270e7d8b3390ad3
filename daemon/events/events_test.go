package events

import (
	"errors"
	"testing"
	"time"
)

func TestSlowSubscriberDroppedOthersServed(t *testing.T) {
	b := &Broadcaster{}
	var hooked []string
	b.Hook(func(ev Event) { hooked = append(hooked, ev.Type) })
	slow, err := b.Subscribe(2)
	if err != nil {
		t.Fatal(err)
	}
	fast, _ := b.Subscribe(100)
	done := make(chan struct{})
	go func() {
		// Publishing never waits for the slow subscriber.
		for i := 0; i < 50; i++ {
			b.Publish(Event{Type: BackupStarted, BackupType: "full"})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Publish blocked on a subscriber that does not read")
	}
	if !slow.Dropped() || b.Subscribers() != 1 {
		t.Fatalf("slow subscriber not dropped: dropped=%v subscribers=%d", slow.Dropped(), b.Subscribers())
	}
	n := 0
	for range slow.C {
		n++
	}
	if n != 2 {
		t.Fatalf("slow subscriber got %d events before its queue closed, want 2", n)
	}
	if len(fast.C) != 50 || fast.Dropped() || len(hooked) != 50 {
		t.Fatalf("fast subscriber %d events (dropped %v), hooks %d", len(fast.C), fast.Dropped(), len(hooked))
	}
	ev := <-fast.C
	if ev.Timestamp.IsZero() || ev.Timestamp.Location() != time.UTC {
		t.Fatalf("timestamp not set in UTC: %v", ev.Timestamp)
	}
	fast.Close()
	fast.Close()
	if b.Subscribers() != 0 {
		t.Fatal("Close did not unsubscribe")
	}
}

func TestSubscriberCap(t *testing.T) {
	b := &Broadcaster{Max: 3}
	var subs []*Subscription
	for i := 0; i < 3; i++ {
		s, err := b.Subscribe(1)
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, s)
	}
	if _, err := b.Subscribe(1); !errors.Is(err, ErrTooManySubscribers) {
		t.Fatalf("fourth subscriber: %v", err)
	}
	subs[0].Close()
	if _, err := b.Subscribe(1); err != nil {
		t.Fatalf("after one closed: %v", err)
	}
}
