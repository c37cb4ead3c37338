// Command pause is the e2e cluster's sandbox ("pause") image: it holds a
// pod's namespaces and does nothing until it is told to stop. The cluster
// has no registry, so it is built here and imported into containerd.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}
