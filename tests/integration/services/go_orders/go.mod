module example.com/go_orders

go 1.20

require github.com/rabbitmq/amqp091-go v1.17.0
