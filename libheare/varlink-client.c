/* varlink-client: placeholder, being written */
