package berth

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"time"
)

// timePrefix encodes milliseconds so that the text sorts as the numbers
// do: base32hex keeps the byte order.
var timePrefix = base32.HexEncoding.WithPadding(base32.NoPadding)

// NewID returns a new unguessable identifier for a lease or a request:
// 10 characters of the creation time in milliseconds, in an alphabet that
// sorts like the time, then 26 characters from crypto/rand (130 bits, as
// rand.Text). The time prefix is for the database, not for callers, who
// must treat ids as opaque: ids made close together sort next to each
// other, so inserting one into a B-tree index touches the index's newest
// page instead of a random one, which for SQLite is one page fewer to
// write to the WAL per acquire.
func NewID() string {
	return newIDAt(time.Now())
}

func newIDAt(t time.Time) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(t.UnixMilli()))
	// The low 6 bytes: 48 bits of milliseconds last until the year 10889.
	return timePrefix.EncodeToString(b[2:]) + rand.Text()
}
