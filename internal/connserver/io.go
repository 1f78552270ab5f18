package connserver

import (
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/mono"
)

// flush writes the output buffer, blocking up to the write deadline; now
// is a recent clock reading.
func (c *conn) flush(now time.Duration) error {
	if len(c.out) == 0 {
		return nil
	}
	c.renewWriteDeadline(now)
	_, err := c.nc.Write(c.out)
	c.resetOut()
	return err
}

// resetOut empties the output buffer, dropping it if a large answer grew
// it.
func (c *conn) resetOut() {
	if cap(c.out) > maxOutKeep {
		c.out = make([]byte, 0, outFlushSize)
	}
	c.out = c.out[:0]
}

// writeOut writes the output buffer: in raw mode without blocking
// (writeBlocked if the socket does not take it all), else through flush.
// It returns next when all is written, done when the write failed.
func (c *conn) writeOut() outcome {
	var err error
	if c.in.fd >= 0 {
		if err = c.writeRaw(); err == errWouldBlock {
			return writeBlocked
		}
	} else {
		err = c.flush(c.now)
	}
	if err != nil {
		c.log.Debug(c.s.Name+": write failed", "remote", c.remote, "err", err)
		return done
	}
	return next
}

// Deadlines are renewed lazily: setting one costs a lock and a runtime
// timer update, so a deadline still far enough away is left as it is.

// renewWriteDeadline makes sure a write blocks at most ReadTimeout and at
// least half of it.
func (c *conn) renewWriteDeadline(now time.Duration) {
	if c.wdl-now < c.readTimeout/2 {
		c.wdl = now + c.readTimeout
		_ = c.nc.SetWriteDeadline(mono.Time(c.wdl))
	}
}

// setIdleDeadline arms the idle timeout before waiting for a request. It
// keeps an idle deadline set less than idleSlack before now. now is when
// the last Call returned: it may be behind by the time the answer took to
// be written, which the kept deadline may then come early by too.
func (c *conn) setIdleDeadline(now time.Duration) {
	if c.rdlIdle && c.rdl-now >= c.idleTimeout-c.idleSlack {
		return
	}
	c.rdl, c.rdlIdle = mono.Now()+c.idleTimeout, true
	_ = c.nc.SetReadDeadline(mono.Time(c.rdl))
}

// setRequestDeadline arms ReadTimeout for the rest of a started request.
func (c *conn) setRequestDeadline(now time.Duration) {
	c.rdl, c.rdlIdle = now+c.readTimeout, false
	_ = c.nc.SetReadDeadline(mono.Time(c.rdl))
}
