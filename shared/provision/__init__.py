"""`obsflow setup`: each service's own PostgreSQL role and RabbitMQ user with least privilege, and the site's bus."""
