// Skynet in Go, for `mnsched bench`: the same 10-ary tree of n leaves as the skynet
// workload (each leaf returns its number, each node sums its children), with goroutines
// and unbuffered channels. Usage: skynet N; prints {"value": seconds, "result": sum}.
// GOMAXPROCS comes from the environment (the bench runs it at 1 and 2).
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

func skynet(c chan int, num, size int) {
	if size == 1 {
		c <- num
		return
	}
	size /= 10
	rc := make(chan int)
	for i := 0; i < 10; i++ {
		go skynet(rc, num+i*size, size)
	}
	sum := 0
	for i := 0; i < 10; i++ {
		sum += <-rc
	}
	c <- sum
}

func main() {
	n, err := strconv.Atoi(os.Args[1])
	if err != nil || n < 1 {
		fmt.Fprintln(os.Stderr, "usage: skynet N (a power of 10)")
		os.Exit(2)
	}
	start := time.Now()
	c := make(chan int)
	go skynet(c, 0, n)
	result := <-c
	fmt.Printf("{\"value\": %f, \"result\": %d}\n", time.Since(start).Seconds(), result)
}
