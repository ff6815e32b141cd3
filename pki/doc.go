// Package pki holds bramley's key material: the CA that issues device
// identities, the server's TLS certificate, the key that seals secrets at
// rest, and the CMS signatures devices put in the Mdm-Signature header.
//
// Private keys never reach the database in the clear: the CA key is sealed
// with a key kept in the data directory (or the BRAMLEY_SECRET_KEY
// environment variable), so a stolen database dump alone cannot mint device
// identities.
package pki
