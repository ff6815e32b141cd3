// Package push wakes devices through the Apple Push Notification service
// (APNs), so they connect to /mdm/connect and fetch their commands.
//
// It holds the three parts of MDM push (apple-protocols.md, section f):
// push certificates (Certificate: the topic in the subject UID, with its
// key, from PEM files or a .p12), the MDM vendor CSR-signing flow that gets
// a customer a certificate from identity.apple.com (NewPushCSR, VendorSign),
// and the APNs provider API over HTTP/2 with certificate authentication
// (Provider; MDM cannot use token authentication). Service ties them to the
// store: it pushes on demand and when commands are queued, and pushes again,
// backing off, while commands stay pending.
package push
