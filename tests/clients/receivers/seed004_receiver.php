<?php

// en esta línea leemos el contenido en el body del request
$payload = json_decode(file_get_contents('php://input'));

// aquí agregamos una línea en el archivo webhook.log con el ID del mensaje
file_put_contents("webhook.log", "Nuevo evento recibido para el mensaje # ". $payload->sms_id . "\n", FILE_APPEND);

