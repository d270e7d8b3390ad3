package rest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/pme2go/pme2go-backup/daemon/events"
	"github.com/pme2go/pme2go-backup/dbusapi"
)

// events serves the notifications: a WebSocket when the request is an
// upgrade, server-sent events when it accepts text/event-stream.
func (s *Server) events(w http.ResponseWriter, r *http.Request, c dbusapi.Caller) {
	if r.Method == "HEAD" {
		// A stream has no end for HEAD to describe: without this, HEAD
		// would hold a subscriber open that never sends a byte.
		w.Header().Set("Allow", "GET")
		s.fail(w, r, http.StatusMethodNotAllowed, dbusapi.Errorf(dbusapi.CodeInvalidArgs, "use GET",
			"HEAD cannot open the event stream"))
		return
	}
	ws := strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
	sse := strings.Contains(r.Header.Get("Accept"), "text/event-stream")
	if !ws && !sse {
		s.fail(w, r, http.StatusNotAcceptable, dbusapi.Errorf(dbusapi.CodeInvalidArgs,
			"open a WebSocket, or send Accept: text/event-stream", "the event stream is a WebSocket or server-sent events"))
		return
	}
	sub, err := s.o.Events.Subscribe(64)
	if err != nil {
		w.Header().Set("Retry-After", "30")
		s.fail(w, r, http.StatusServiceUnavailable, dbusapi.Errorf(dbusapi.CodeBusy, "close another event stream, or try again later",
			fmt.Sprintf("%v (at most %d at once)", err, s.maxSubscribers())))
		return
	}
	defer sub.Close()
	// The stream outlives WriteTimeout and ReadTimeout: each write gets its
	// own deadline instead.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	s.o.Log.Info("event stream opened", "caller_uid", c.UID, "websocket", ws)
	if ws {
		s.websocket(w, r, sub)
	} else {
		s.sse(w, r, rc, sub)
	}
	s.o.Log.Info("event stream closed", "caller_uid", c.UID, "dropped_slow", sub.Dropped())
}

func (s *Server) maxSubscribers() int {
	if s.o.Events.Max > 0 {
		return s.o.Events.Max
	}
	return events.DefaultMaxSubscribers
}

func (s *Server) websocket(w http.ResponseWriter, r *http.Request, sub *events.Subscription) {
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept has answered
	}
	defer conn.CloseNow()
	conn.SetReadLimit(4096)
	// Nothing is read from the client; CloseRead answers its pings and
	// close frames and ends ctx when it goes away.
	ctx := conn.CloseRead(r.Context())
	tick := time.NewTicker(keepAliveInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			if s.ctx.Err() != nil {
				// The daemon is stopping: the events already queued (the
				// failures of the jobs it cancelled) go out first.
				for _, ev := range drain(sub) {
					wctx, cancel := context.WithTimeout(context.Background(), eventWriteTimeout)
					err := conn.Write(wctx, websocket.MessageText, s.scrub(mustJSON(ev)))
					cancel()
					if err != nil {
						return
					}
				}
			}
			if errors.Is(context.Cause(r.Context()), context.Canceled) || s.ctx.Err() != nil {
				_ = conn.Close(websocket.StatusGoingAway, "the daemon is stopping")
			}
			return
		case ev, ok := <-sub.C:
			if !ok {
				_ = conn.Close(websocket.StatusTryAgainLater, "too slow: events were not read in time")
				return
			}
			data := s.scrub(mustJSON(ev))
			wctx, cancel := context.WithTimeout(ctx, eventWriteTimeout)
			err := conn.Write(wctx, websocket.MessageText, data)
			cancel()
			if err != nil {
				return
			}
		case <-tick.C:
			pctx, cancel := context.WithTimeout(ctx, eventWriteTimeout)
			err := conn.Ping(pctx)
			cancel()
			if err != nil {
				return
			}
		}
	}
}

func (s *Server) sse(w http.ResponseWriter, r *http.Request, rc *http.ResponseController, sub *events.Subscription) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	write := func(text string) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(eventWriteTimeout))
		if _, err := w.Write([]byte(text)); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write(": pme2go-backup events\nretry: 5000\n\n") {
		return
	}
	tick := time.NewTicker(keepAliveInterval)
	defer tick.Stop()
	send := func(ev events.Event) bool {
		return write("event: " + ev.Type + "\ndata: " + string(s.scrub(mustJSON(ev))) + "\n\n")
	}
	for {
		select {
		case <-r.Context().Done():
			if s.ctx.Err() != nil {
				// The daemon is stopping: the events already queued go
				// out first.
				for _, ev := range drain(sub) {
					if !send(ev) {
						return
					}
				}
			}
			return
		case ev, ok := <-sub.C:
			if !ok {
				write("event: error\ndata: {\"error\":{\"code\":\"BUSY\",\"message\":\"too slow: events were not read in time\"}}\n\n")
				return
			}
			if !send(ev) {
				return
			}
		case <-tick.C:
			if !write(": keep-alive\n\n") {
				return
			}
		}
	}
}

// drain returns the events queued for sub without waiting.
func drain(sub *events.Subscription) []events.Event {
	var out []events.Event
	for {
		select {
		case ev, ok := <-sub.C:
			if !ok {
				return out
			}
			out = append(out, ev)
		default:
			return out
		}
	}
}

func mustJSON(ev events.Event) []byte {
	data, _ := json.Marshal(ev)
	return data
}
