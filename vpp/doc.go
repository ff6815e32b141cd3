// Package vpp speaks to Apple's Apps and Books for Organizations service
// (formerly the Volume Purchase Program), version 2, at
// https://vpp.itunes.apple.com/mdm/v2 (apple-protocols.md, section h.2).
//
// It holds three parts:
//
//   - ContentToken: the location's content token (the .vpptoken file an
//     administrator downloads from Apple Business or School Manager), its
//     expiry and Apple's warning period.
//   - Client: the v2 API with the token as bearer: service and client
//     configuration (limits, error codes, claiming a location for this
//     server), assets, users, assignments, and the asynchronous events
//     every write returns. It keeps Apple's rate limit, honours
//     Retry-After, retries what Apple says to retry and nothing else, and
//     maps Apple's error numbers, the legacy v1 ones included, to errors
//     callers test with errors.Is (ErrAlreadyAssigned for 9616 …).
//   - People: "people before devices" over a UserStore: each person is
//     registered once per location and gets one invitation, acceptance and
//     the Apple account behind it (idHash) are tracked, several people on
//     one Apple account are found, and licences are assigned without ever
//     giving one Apple account the same asset twice.
//
// appletest.VPP is a fake of the service for tests and bramley demo.
package vpp
