// Package natsserver runs an embedded NATS server with JetStream, for `memmie dev` and for
// tests.
//
//	srv, err := natsserver.Start(natsserver.Config{StoreDir: "./.memmie/nats"})
//	if err != nil { ... }
//	defer srv.Shutdown()
//	nc, err := nats.Connect(srv.ClientURL())
//
// The package only starts and stops the server. It never creates streams or touches their
// contents: that belongs to the packages that own the data. Tests use the natstest helpers.
package natsserver
