import requests

response = requests.post(
    "https://www.insim.app/api/v1/sendsms",
    json={
        "header": {
            "login": "user@email.com",
            "accessKey": "your-access-key"
        },
        "messages": [{
            "phone_number": "+33612345678",
            "message": "Test from Python"
        }]
    }
)
print(response.json())
