// Command warren-collector is the in-container half of warren acquire: streamed into a container over exec stdin
// by collector.Collect, it writes one tar stream of evidence to stdout (see package collector).
package main

func main() {}
