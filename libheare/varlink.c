/* varlink: placeholder, being written */
