// Package ade talks to Apple's device assignment service for Automated
// Device Enrollment (ADE, formerly DEP; apple-protocols.md section g): the
// server token an organization downloads from Apple Business Manager
// (ParseServerToken, NewTokenKeyPair), the OAuth 1.0a session and the
// endpoints of mdmenrollment.apple.com (Client), the cursor dance that keeps
// bramley's list of assigned devices current (Syncer), and ADE profile
// definitions with the checks Apple would otherwise make after a round trip
// (Profile.Validate).
//
// The package holds no storage: the syncer reads and writes its cursor
// through CursorStore and hands devices to DeviceSink, both declared here
// and implemented by the storage backends.
package ade
