// The Go programs beside `mnsched bench`'s Go-anchored workloads, each the same work as
// its Python twin in workloads.py. Usage: gobench WORKLOAD N; prints
// {"value": seconds, "result": R}. GOMAXPROCS comes from the environment (the bench runs
// it at 1 and 2).
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"
)

// skynet: a 10-ary tree of n leaves (each leaf returns its number, each node sums its
// children), with goroutines and unbuffered channels.
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

// sieve: Go's concurrent prime sieve (test/chan/sieve1.go), the n-th prime.
func generate(ch chan<- int) {
	for i := 2; ; i++ {
		ch <- i
	}
}

func filter(in <-chan int, out chan<- int, prime int) {
	for {
		i := <-in
		if i%prime != 0 {
			out <- i
		}
	}
}

func sieve(n int) int {
	ch := make(chan int)
	go generate(ch)
	prime := 0
	for i := 0; i < n; i++ {
		prime = <-ch
		ch1 := make(chan int)
		go filter(ch, ch1, prime)
		ch = ch1
	}
	return prime
}

// workerPool: WORKERS goroutines take n jobs from a buffered channel and send back
// each job's square; the sum of the results.
const WORKERS = 64

func workerPool(n int) int {
	jobs := make(chan int, WORKERS)
	results := make(chan int, WORKERS)
	for w := 0; w < WORKERS; w++ {
		go func() {
			for j := range jobs {
				results <- j * j
			}
		}()
	}
	go func() {
		for j := 0; j < n; j++ {
			jobs <- j
		}
		close(jobs)
	}()
	sum := 0
	for i := 0; i < n; i++ {
		sum += <-results
	}
	return sum
}

// mutex: WORKERS goroutines take a Mutex n times in all; each read-modify-write of the
// counter yields inside the critical section (runtime.Gosched: the await in Python's),
// so the lock is contended and handed over.
func mutex(n int) int {
	var mu sync.Mutex
	var wg sync.WaitGroup
	counter := 0
	for w := 0; w < WORKERS; w++ {
		k := n / WORKERS
		if w < n%WORKERS {
			k++
		}
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			for i := 0; i < k; i++ {
				mu.Lock()
				c := counter
				runtime.Gosched()
				counter = c + 1
				mu.Unlock()
			}
		}(k)
	}
	wg.Wait()
	return counter
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: gobench skynet|sieve|worker-pool|mutex N")
		os.Exit(2)
	}
	n, err := strconv.Atoi(os.Args[2])
	if err != nil || n < 1 {
		fmt.Fprintln(os.Stderr, "gobench: N must be a positive integer")
		os.Exit(2)
	}
	start := time.Now()
	var result int
	switch os.Args[1] {
	case "skynet":
		c := make(chan int)
		go skynet(c, 0, n)
		result = <-c
	case "sieve":
		result = sieve(n)
	case "worker-pool":
		result = workerPool(n)
	case "mutex":
		result = mutex(n)
	default:
		fmt.Fprintf(os.Stderr, "gobench: no workload %q\n", os.Args[1])
		os.Exit(2)
	}
	fmt.Printf("{\"value\": %f, \"result\": %d}\n", time.Since(start).Seconds(), result)
}
