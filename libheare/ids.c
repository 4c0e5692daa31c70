/* ids: placeholder, being written */
