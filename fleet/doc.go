// Package fleet shares what one tlspolicyd learns with the other daemons
// of a fleet of MTAs through Redis or Valkey: learned policies, probe and
// source results, alert claims and events.
//
// The lookup path never waits on Redis. Each daemon answers from its own
// caches; the fleet fills them from Redis (a full resync on every
// connect, then a pub/sub channel of changes) and receives local results
// through a bounded queue written asynchronously. Records are keyed
// tlspolicyd:<cluster>:rec:<kind>:<key> and expire with the record, so
// Redis holds only what is live.
package fleet
