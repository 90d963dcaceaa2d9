// Command go_orders accepts orders from a RabbitMQ queue and publishes one
// result per order to another queue: a consumer written in Go, with
// github.com/rabbitmq/amqp091-go, configured by environment variables.
//
// An order is a JSON object with an "id"; anything else is rejected without
// requeue (the queue's dead-letter policy takes it). A result is published
// with publisher confirms and the input's headers, and only then is the
// input acked: a crash in between delivers the order again.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

type settings struct {
	url, input, output string
	prefetch           int
}

func mustEnv(name string) string {
	value := os.Getenv(name)
	if value == "" {
		log.Fatalf("%s is not set", name)
	}
	return value
}

func loadSettings() settings {
	return settings{
		url:      mustEnv("ORDERS_AMQP_URL"),
		input:    mustEnv("ORDERS_QUEUE"),
		output:   mustEnv("ORDERS_RESULTS_QUEUE"),
		prefetch: 10,
	}
}

type order struct {
	ID *json.Number `json:"id"`
}

// result is the reply to one order body, or an error for bad input.
func result(body []byte) ([]byte, error) {
	var o order
	if err := json.Unmarshal(body, &o); err != nil {
		return nil, err
	}
	if o.ID == nil {
		return nil, errors.New(`no "id"`)
	}
	return json.Marshal(map[string]any{"order": o.ID, "status": "accepted"})
}

func run(ctx context.Context, s settings) error {
	conn, err := amqp.Dial(s.url)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("channel: %w", err)
	}
	if err := ch.Qos(s.prefetch, 0, false); err != nil {
		return fmt.Errorf("qos: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		return fmt.Errorf("confirm mode: %w", err)
	}
	deliveries, err := ch.Consume(s.input, "go-orders", false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume %s: %w", s.input, err)
	}
	log.Printf("consuming %s", s.input)
	for {
		select {
		case <-ctx.Done():
			log.Printf("stopping")
			return nil
		case d, ok := <-deliveries:
			if !ok {
				return errors.New("delivery channel closed: connection lost")
			}
			if err := handle(ctx, ch, s, d); err != nil {
				return err
			}
		}
	}
}

func handle(ctx context.Context, ch *amqp.Channel, s settings, d amqp.Delivery) error {
	reply, err := result(d.Body)
	if err != nil {
		log.Printf("rejecting bad order: %v", err)
		return d.Reject(false)
	}
	publishCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	confirm, err := ch.PublishWithDeferredConfirmWithContext(publishCtx, "", s.output, false, false,
		amqp.Publishing{
			Headers:      d.Headers, // carries the harness id (and the key) over
			ContentType:  "application/json",
			DeliveryMode: amqp.Persistent,
			Body:         reply,
		})
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	acked, err := confirm.WaitContext(publishCtx)
	if err != nil {
		return fmt.Errorf("confirm: %w", err)
	}
	if !acked {
		return errors.New("broker nacked a result")
	}
	return d.Ack(false)
}

func main() {
	log.SetFlags(log.Lmicroseconds)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, loadSettings()); err != nil {
		log.Fatal(err)
	}
}
