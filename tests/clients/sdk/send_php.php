<?php
// The requests of composer's soloapi/apisolo (ArdaryinSIM/insim-php-composer,
// src/ApiSolo.php): POST of the README's JSON text to /api/sendSmsSolo and
// /api/addcontactSolo. Its src/ApiSolo.php does not parse as published (a
// second "<?php" inside addContact) and needs ext-curl, so this sends the same
// requests with PHP's own HTTP stream; the bodies are the README's, verbatim
// but for the masked numbers and the comment inside the JSON (not JSON).
$base = $argv[1];
function post($url, $data) {
    return file_get_contents($url, false, stream_context_create(['http' => [
        'method' => 'POST', 'header' => 'Content-Type: application/json', 'content' => $data]]));
}
$data='{"header":{"login":"user@gmail.com","accessKey":"xYGt5Dl9wKvz+#RGGU!PjVB+KfiJAYnh%z4&","mode":"prod","priority":2},"messages":[{"phone_number":"+33612345678","message":"Hi Cassandra, can you confirm our appointement?","url":"https://www.my-link.com","priorite": 1,"date_to_send":"2022-10-29 10:16:10"},{"phone_number":"+33612345679","message":"Dear customer, your package has been sent","url":"","priorite": 1,"date_to_send":"2022-10-29 10:16:10"}]}';
$contacts='{"header": [{ "login": "user@gmail.com","password": "xYGt5Dl9wKvz+#RGGU!PjVB+KfiJAYnh%z4&","api": true}], "contacts": [{ "phone_number": "+14155552671", "first_name": "Doe","last_name": "Joe", "adress": "contact adress", "email": "contact_email@gmail.com", "country_code":"+1" },{ "phone_number": "+14155552672", "first_name": "Smith","last_name": "John","adress": "contact adress","email": "contact_email@gmail.com" }]}';
echo json_encode(['send' => json_decode(post($base . '/api/sendSmsSolo', $data)),
                  'contact' => json_decode(post($base . '/api/addcontactSolo', $contacts))]);
