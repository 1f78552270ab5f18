package connserver

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestRequestContext(t *testing.T) {
	dl := time.Now().Add(time.Hour)
	tests := []struct {
		name       string
		doneFirst  bool // ask for Done before cancelling
		cancelWith error
	}{
		{"done then deadline", true, context.DeadlineExceeded},
		{"done then cancel", true, context.Canceled},
		{"cancel then done", false, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := &requestContext{deadline: dl}
			if got, ok := ctx.Deadline(); !ok || !got.Equal(dl) {
				t.Errorf("Deadline = %v, %v", got, ok)
			}
			if ctx.Err() != nil {
				t.Fatalf("Err before cancel = %v", ctx.Err())
			}
			child, stop := context.WithCancel(ctx)
			defer stop()
			fired := make(chan struct{})
			context.AfterFunc(ctx, func() { close(fired) })
			var done <-chan struct{}
			if tt.doneFirst {
				done = ctx.Done()
				select {
				case <-done:
					t.Fatal("Done closed before cancel")
				default:
				}
			}
			ctx.cancel(tt.cancelWith)
			ctx.cancel(errors.New("second cancel is ignored"))
			if !tt.doneFirst {
				done = ctx.Done()
			}
			for what, ch := range map[string]<-chan struct{}{"Done": done, "child": child.Done(), "AfterFunc": fired} {
				select {
				case <-ch:
				case <-time.After(5 * time.Second):
					t.Fatalf("%s not closed after cancel", what)
				}
			}
			if !errors.Is(ctx.Err(), tt.cancelWith) || !errors.Is(child.Err(), tt.cancelWith) {
				t.Errorf("Err = %v, child Err = %v, want %v", ctx.Err(), child.Err(), tt.cancelWith)
			}
		})
	}
}
