/* state: placeholder, being written */
