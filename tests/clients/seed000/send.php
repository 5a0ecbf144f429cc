<?php
$response = file_get_contents(
    'https://www.insim.app/api/v1/sendsms',
    false,
    stream_context_create([
        'http' => [
            'method' => 'POST',
            'header' => 'Content-Type: application/json',
            'content' => json_encode([
                'header' => [
                    'login' => 'user@email.com',
                    'accessKey' => 'your-access-key'
                ],
                'messages' => [[
                    'phone_number' => '+33612345678',
                    'message' => 'Test from PHP'
                ]]
            ])
        ]
    ])
);
echo $response;
